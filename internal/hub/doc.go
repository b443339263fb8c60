// Package hub holds an app server's live sessions: which local client views
// or watches which post, the per-post coalescing of count updates, the
// bounded send queue of every client, and the refresh loop that keeps the
// sessions alive in the store. It knows nothing of WebSocket, Redis or HTTP:
// the transport reads and writes frames, the store and its Feed move state.
//
// # Locks
//
// Three locks, always taken in this order, never the other way: Client.opMu,
// then Hub.mu, then Client.qmu.
//
//   - Client.opMu serialises one client's operations (view, unview, watch,
//     leave, re-registration) and guards what only they touch (seen, left,
//     stale). It is held across store calls, so a client's operations reach
//     the store in the order it sent them; no other lock is held then.
//   - Hub.mu guards the rooms, the sessions and each client's view and
//     watch set, which the rooms read. Store calls are never made under it:
//     a slow Redis must not stop the fan-out to every other client. The
//     Subscriber is called under it and must return at once.
//   - Client.qmu guards one client's send queue. Fan-out takes it under
//     Hub.mu, once per member; nothing is locked under it. The client's wake
//     function is called under it, and only starts a goroutine.
//
// The embedded store calls Deliver, and so takes Hub.mu, while holding its
// own lock; that is safe because the hub never calls the store holding
// Hub.mu.
//
// # Goroutines
//
// The hub starts none per client. Run's goroutine refreshes the sessions,
// and a second one, which Run starts and waits for, checks the store. Each
// room with a count held back for its coalescing window has a timer, which
// flushes the room on its own goroutine and is stopped when the room
// empties. The transport owns every connection's goroutines (its reader,
// the writer that the wake function starts while frames wait and that ends
// when Next finds none, its pinger) and waits for them when the connection
// ends. A writer runs only when Next last reported frames, so there is at
// most one per client, and an idle client has none.
package hub
