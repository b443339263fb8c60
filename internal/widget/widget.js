/*! Presence widget: live "N people are viewing this" counters. No dependencies.
 * <script src="https://presence.example.com/widget.js" data-post="13" async></script>
 * <span data-presence-viewers="13"></span> <span data-presence-views="13"></span>
 * API: Presence.on('count'|'event'|'status'|'error', fn), Presence.off(...), Presence.get(post),
 *      Presence.view(post), Presence.unview(), Presence.watch([posts]), Presence.scan()
 */
(function (w, d) {
  "use strict";
  if (w.Presence && w.Presence.version) return; // loaded twice: keep the first

  var me = d.currentScript || d.querySelector('script[src*="widget.js"]');
  var base = new URL(me ? me.src : "/widget.js", location.href);
  var url = (base.protocol === "https:" ? "wss://" : "ws://") + base.host + "/v1/ws";
  var viewing = me && me.getAttribute("data-post") || null;
  var watched = {};   // post -> true
  var counts = {};    // post -> {viewers, views}: kept while reconnecting
  var handlers = {};  // type -> [fn]
  var ws = null, tries = 0, timer = null, status = "connecting";

  function setStatus(s) { status = s; emit("status", s); }

  function emit(type, arg) {
    (handlers[type] || []).slice().forEach(function (fn) {
      try { fn(arg); } catch (e) { setTimeout(function () { throw e; }); }
    });
  }

  function send(o) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(o));
  }

  // Watch lists go in chunks of 100, the most one frame may hold; the server
  // also refuses more than 100 watched posts in all.
  function sendWatch(posts) {
    for (var i = 0; i < posts.length; i += 100) send({ type: "watch", posts: posts.slice(i, i + 100) });
  }

  // Post ids are [A-Za-z0-9_-], safe inside a quoted attribute selector.
  function render(post) {
    var c = counts[post];
    if (!c) return;
    ["viewers", "views"].forEach(function (k) {
      var els = d.querySelectorAll("[data-presence-" + k + '="' + post + '"]');
      for (var i = 0; i < els.length; i++) els[i].textContent = String(c[k]);
    });
  }

  function scan() {
    var els = d.querySelectorAll("[data-presence-viewers],[data-presence-views]"), add = [];
    for (var i = 0; i < els.length; i++) {
      var p = els[i].getAttribute("data-presence-viewers") || els[i].getAttribute("data-presence-views");
      if (p && p !== viewing && !watched[p]) { watched[p] = true; add.push(p); }
      if (p && counts[p]) render(p);
    }
    sendWatch(add);
  }

  function connect() {
    timer = null;
    try { ws = new WebSocket(url); } catch (e) { return retry(); }
    ws.onmessage = function (e) {
      var m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      if (m.type === "hello") {
        tries = 0;
        setStatus("connected");
        if (viewing) send({ type: "view", post: viewing });
        sendWatch(Object.keys(watched));
      } else if (m.type === "count") {
        counts[m.post] = { viewers: m.viewers, views: m.views };
        render(m.post);
        emit("count", m);
      } else if (m.type === "event") {
        emit("event", m);
      } else if (m.type === "error") {
        emit("error", m);
      }
    };
    ws.onclose = function () {
      ws = null;
      setStatus("disconnected");
      retry();
    };
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
    view: function (post) { viewing = String(post); send({ type: "view", post: viewing }); },
    unview: function () { viewing = null; send({ type: "unview" }); },
    watch: function (posts) {
      var add = [];
      posts.forEach(function (p) { p = String(p); if (!watched[p]) { watched[p] = true; add.push(p); } });
      sendWatch(add);
    },
    scan: scan
  };

  scan();
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", scan);
  connect();
})(window, document);
