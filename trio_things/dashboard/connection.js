// One WebSocket to the server's /ws, in the Web Thing Protocol, kept open.
//
// Requests are answered in order; a request's notifications (property values, events,
// the status of an action it invoked) carry its messageID as their correlationID and go
// to the listener given with it. When the socket closes, every listener is dropped and
// the pending requests fail; the socket reopens after an exponential backoff with
// jitter, and the `open` listeners (the page) observe and subscribe again.

const INITIAL_DELAY = 500;   // ms before the first retry
const MAX_DELAY = 15000;     // ms, the longest wait between two attempts
const ENDED = new Set(["completed", "failed", "cancelled"]);

export {ENDED};

/** A refused request: the response's problem details. */
export class RequestError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || "refused");
    this.name = "RequestError";
    this.status = problem.status;
    this.title = problem.title;
  }
}

/** The request could not be answered: the connection was lost or is not open. */
export class NotConnected extends Error {
  constructor() {
    super("not connected to the server");
    this.name = "NotConnected";
  }
}

let counter = 0;
const prefix = Array.from(crypto.getRandomValues(new Uint8Array(6)),
                          (b) => b.toString(16).padStart(2, "0")).join("");

/** A message id: crypto.randomUUID exists only in secure contexts, a lab's http:// isn't one. */
function messageID() {
  counter += 1;
  return `${prefix}-${counter}`;
}

export class Connection {
  /**
   * @param url a function that answers the WebSocket URL (it holds the token, which
   *   may change between attempts)
   */
  constructor(url) {
    this.url = url;
    this.socket = null;
    this.opened = new WeakSet();  // the sockets that opened (a failed attempt never does)
    this.attempt = 0;
    this.everOpened = false;
    this.state = {state: "connecting"};
    this.pending = new Map();     // messageID -> {resolve, reject}
    this.listeners = new Map();   // correlationID -> notification listener
    this.openListeners = new Set();
    this.stateListeners = new Set();
    this.failureListeners = new Set();
    this.retryTimer = null;
    this.countdownTimer = null;
    this.stopped = false;
  }

  start() {
    window.addEventListener("online", () => this.retryNow());
    // The browser knows the network is gone: a socket it leaves open would hang, so
    // drop it now and wait for "online" (or the backoff) to try again.
    window.addEventListener("offline", () => {
      if (this.socket) this.dropped(this.socket);
      else this.setState({state: "offline"});
    });
    this.open();
  }

  /** Close the socket and stop trying (the page waits for a token). */
  stop() {
    this.stopped = true;
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
  }

  isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  /** Call `listener()` each time the socket opens (now too, if it is open). */
  onOpen(listener) {
    this.openListeners.add(listener);
    if (this.isOpen()) listener();
  }

  /** Call `listener(state)` at each change: {state: "connecting" | "connected" |
   * "waiting" (with `seconds`) | "reconnecting" | "offline"}. */
  onState(listener) {
    this.stateListeners.add(listener);
    listener(this.state);
  }

  /** Call `listener()` when an attempt fails before the socket opened. */
  onFailure(listener) {
    this.failureListeners.add(listener);
  }

  /** Try again now, without waiting for the backoff (the network is back, a new token). */
  retryNow() {
    if (this.socket !== null) return;
    this.clearTimers();
    this.open();
  }

  /**
   * Send a request; resolves with the response, rejects with RequestError (refused) or
   * NotConnected. `onNotification(message)` receives the notifications it leads to.
   */
  request(operation, members = {}, onNotification = null) {
    if (!this.isOpen()) return Promise.reject(new NotConnected());
    const id = messageID();
    const message = {messageID: id, messageType: "request", operation, ...members};
    if (onNotification) this.listeners.set(id, onNotification);
    return new Promise((resolve, reject) => {
      this.pending.set(id, {resolve, reject});
      this.socket.send(JSON.stringify(message));
    });
  }

  /** Forget the listener of an earlier request's notifications. */
  forget(correlationID) {
    this.listeners.delete(correlationID);
  }

  open() {
    if (this.stopped) return;
    if (!navigator.onLine) {
      this.setState({state: "offline"});
      return;
    }
    this.setState({state: this.everOpened ? "reconnecting" : "connecting"});
    let socket;
    try {
      socket = new WebSocket(this.url(), "webthingprotocol");
    } catch {
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.opened.add(socket);
      this.everOpened = true;
      this.attempt = 0;
      this.setState({state: "connected"});
      for (const listener of this.openListeners) listener();
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", () => this.dropped(socket));
  }

  /** The socket closed, or is given up: fail what waits on it, and try again later. */
  dropped(socket) {
    if (this.socket !== socket) return;
    this.socket = null;
    if (socket.readyState !== WebSocket.CLOSED) socket.close();
    const lost = [...this.pending.values()];
    this.pending.clear();
    this.listeners.clear();
    for (const {reject} of lost) reject(new NotConnected());
    if (!this.opened.has(socket)) for (const listener of this.failureListeners) listener();
    this.scheduleRetry();
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const correlation = message.correlationID || message.messageID;
    if (message.messageType === "response") {
      const waiting = this.pending.get(correlation);
      if (!waiting) return;
      this.pending.delete(correlation);
      if (message.error) {
        this.listeners.delete(correlation);
        waiting.reject(new RequestError(message.error));
      } else {
        waiting.resolve(message);
      }
    } else if (message.messageType === "notification") {
      const listener = this.listeners.get(message.correlationID);
      if (listener) listener(message);
    }
  }

  scheduleRetry() {
    this.clearTimers();
    const ceiling = Math.min(MAX_DELAY, INITIAL_DELAY * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * ceiling / 2;  // "equal jitter"
    this.attempt += 1;
    const due = Date.now() + delay;
    const tick = () => {
      if (!navigator.onLine) {
        this.setState({state: "offline"});
        return;
      }
      this.setState({state: "waiting", seconds: Math.max(1, Math.ceil((due - Date.now()) / 1000))});
    };
    tick();
    this.countdownTimer = setInterval(tick, 250);
    this.retryTimer = setTimeout(() => {
      this.clearTimers();
      this.open();
    }, delay);
  }

  clearTimers() {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdownTimer);
    this.retryTimer = null;
    this.countdownTimer = null;
  }

  setState(state) {
    if (state.state === this.state.state && state.seconds === this.state.seconds) return;
    this.state = state;
    for (const listener of this.stateListeners) listener(state);
  }
}

/** The state for people. */
export function describeState(state) {
  switch (state.state) {
    case "connected": return "connected";
    case "connecting": return "connecting…";
    case "reconnecting": return "reconnecting…";
    case "waiting": return `reconnecting in ${state.seconds} s`;
    case "offline": return "offline";
    default: return state.state;
  }
}
