/*! Presence widget: live "N people are viewing this" counters. No dependencies.
 * <script src="https://presence.example.com/widget.js" data-post="13" data-token="..." async></script>
 * <span data-presence-people="13"></span> people · <span data-presence-reading="13"></span> reading now ·
 * <span data-presence-viewers="13" data-presence-token="..."></span> open · <span data-presence-views="13"></span> views
 * API: Presence.on('count'|'event'|'status'|'error', fn), Presence.off(...), Presence.get(post),
 *      Presence.view(post, token), Presence.unview(), Presence.watch([posts], {post: token}), Presence.scan()
 */
(function (w, d) {
  "use strict";
  if (w.Presence && w.Presence.version) return; // loaded twice: keep the first

  var me = d.currentScript || d.querySelector('script[src*="widget.js"]');
  var base = new URL(me ? me.src : "/widget.js", location.href);
  var url = (base.protocol === "https:" ? "wss://" : "ws://") + base.host + "/v1/ws";
  // Maps without a prototype: any legal id, "constructor" or "__proto__"
  // too, is a plain key.
  function map() { return Object.create(null); }
  var watched = map();  // post -> true
  var counts = map();   // post -> {viewers, views}: kept while reconnecting
  var tokens = map();   // post -> token signed by the site, if it signs posts
  var handlers = map(); // type -> [fn]
  var viewing = null, signed = false, resume = "";
  var ws = null, tries = 0, timer = null, stable = null, status = "connecting", probed = false;

  // The server's charset: an id it would refuse must not spoil a whole watch.
  function valid(p) { return /^[A-Za-z0-9_-]{1,64}$/.test(p); }

  function setToken(post, token) { if (token) { tokens[post] = String(token); signed = true; } }

  // want notes a post to watch and says whether it must be sent now: it is
  // new, or it was left out for want of a token that it has now.
  function want(p, token) {
    var fresh = !watched[p] || !!token && !tokens[p];
    setToken(p, token);
    watched[p] = true;
    return fresh;
  }

  // A random id this browser keeps for the site, so that its tabs on a
  // post count as one person: no cookie, and nothing about the reader.
  var visitor = "";
  try {
    visitor = localStorage.getItem("presence-visitor") || "";
    if (!/^[\w-]{8,64}$/.test(visitor)) {
      var b = crypto.getRandomValues(new Uint8Array(16));
      visitor = btoa(String.fromCharCode.apply(null, b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=/g, "");
      localStorage.setItem("presence-visitor", visitor);
    }
  } catch (e) { visitor = ""; } // storage blocked: each tab a person

  if (me && valid(me.getAttribute("data-post") || "")) {
    viewing = me.getAttribute("data-post");
    setToken(viewing, me.getAttribute("data-token"));
  }

  function setStatus(s) { status = s; emit("status", s); }

  function emit(type, arg) {
    (handlers[type] || []).slice().forEach(function (fn) {
      try { fn(arg); } catch (e) { setTimeout(function () { throw e; }); }
    });
  }

  function send(o) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(o));
  }

  // A tab in the background still views its post, but is not reading it.
  function sendView() {
    var f = { type: "view", post: viewing };
    if (tokens[viewing]) f.token = tokens[viewing];
    if (d.hidden) f.hidden = true;
    if (visitor) f.visitor = visitor;
    send(f);
  }
  d.addEventListener("visibilitychange", function () { if (viewing) sendView(); });

  // Watch lists go in chunks of 100, the most one frame may hold; the server
  // also refuses more than 100 watched posts in all. Tokens pair with posts.
  // On a page that signs its posts, a post without a token would make the
  // server refuse its whole chunk, so it is left out.
  function sendWatch(posts) {
    if (signed) posts = posts.filter(function (p) { return tokens[p]; });
    for (var i = 0; i < posts.length; i += 100) {
      var chunk = posts.slice(i, i + 100), f = { type: "watch", posts: chunk };
      if (signed) f.tokens = chunk.map(function (p) { return tokens[p]; });
      send(f);
    }
  }

  // Post ids are [A-Za-z0-9_-], safe inside a quoted attribute selector.
  function render(post) {
    var c = counts[post];
    if (!c) return;
    ["viewers", "views", "reading", "people"].forEach(function (k) {
      var els = d.querySelectorAll("[data-presence-" + k + '="' + post + '"]');
      for (var i = 0; i < els.length; i++) els[i].textContent = String(c[k]);
    });
  }

  function scan() {
    var kinds = ["viewers", "views", "reading", "people"];
    var els = d.querySelectorAll(kinds.map(function (k) { return "[data-presence-" + k + "]"; }).join()), add = [];
    for (var i = 0; i < els.length; i++) {
      var p = "";
      for (var k = 0; k < 4 && !p; k++) p = els[i].getAttribute("data-presence-" + kinds[k]);
      if (!valid(p || "")) continue;
      var tok = els[i].getAttribute("data-presence-token");
      if (p === viewing) setToken(p, tok);
      else if (want(p, tok)) add.push(p);
      if (counts[p]) render(p);
    }
    sendWatch(add);
  }

  function connect() {
    timer = null;
    // The resume token continues this tab's session: a reconnect is no new
    // viewer and no new view. A reload starts over, as it is a new view.
    var up = false;
    try { ws = new WebSocket(url + (resume ? "?resume=" + encodeURIComponent(resume) : "")); } catch (e) { return retry(); }
    ws.onopen = function () { up = true; };
    ws.onmessage = function (e) {
      var m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      if (m.type === "hello") {
        resume = m.resume || "";
        // The backoff starts over only once a connection has stayed up: a
        // server that closes each one at once must not be hit every 0.5 s.
        stable = setTimeout(function () { tries = 0; }, 10000);
        setStatus("connected");
        if (viewing) sendView();
        sendWatch(Object.keys(watched));
      } else if (m.type === "count") {
        // A server from before reading and people: every viewer reads and
        // is a person.
        counts[m.post] = { viewers: m.viewers, views: m.views,
          reading: m.reading == null ? m.viewers : m.reading, people: m.people == null ? m.viewers : m.people };
        render(m.post);
        emit("count", m);
      } else if (m.type === "status") {
        // The server is up but cannot reach its store: counts are paused.
        setStatus(m.store === "down" ? "degraded" : "connected");
      } else if (m.type === "event") {
        emit("event", m);
      } else if (m.type === "error") {
        emit("error", m);
      }
    };
    ws.onclose = function (e) {
      ws = null;
      clearTimeout(stable);
      if (!up) probe();
      // 1012: the server restarts and keeps the session for a while;
      // another server takes it at once.
      if (e.code === 1012) tries = 0;
      setStatus("disconnected");
      retry();
    };
  }

  // A socket refused at the handshake tells the page nothing of why. The
  // server answers a plain GET of the same URL with the reason, readable by
  // any page; a refused origin is worth one console line, once per page.
  function probe() {
    if (probed || !w.fetch) return;
    probed = true;
    fetch(base.origin + "/v1/ws").then(function (r) {
      return r.status === 403 && r.json();
    }).then(function (b) {
      if (b && b.error) console.warn("Presence: " + b.error.message);
    }, function () {});
  }

  // Exponential backoff with full jitter (0.5 s doubling to 30 s), so a
  // restarted server is not hit by every tab at the same instant.
  function retry() {
    if (timer) return;
    var cap = Math.min(30000, 500 * Math.pow(2, tries++));
    timer = setTimeout(connect, Math.random() * cap);
  }

  w.Presence = {
    version: 1,
    // A status handler hears the current status at once: the widget loads
    // async and may have connected before the page's own script runs.
    on: function (type, fn) {
      (handlers[type] = handlers[type] || []).push(fn);
      if (type === "status") fn(status);
      return this;
    },
    off: function (type, fn) {
      handlers[type] = (handlers[type] || []).filter(function (f) { return f !== fn; });
      return this;
    },
    get: function (post) { return counts[post] || null; },
    view: function (post, token) {
      viewing = String(post);
      setToken(viewing, token);
      sendView();
    },
    unview: function () { viewing = null; send({ type: "unview" }); },
    // toks maps posts to their tokens, where the site signs posts.
    watch: function (posts, toks) {
      var add = [];
      posts.forEach(function (p) {
        p = String(p);
        if (valid(p) && want(p, toks && toks[p])) add.push(p);
      });
      sendWatch(add);
    },
    scan: scan
  };

  scan();
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", scan);
  connect();
})(window, document);
