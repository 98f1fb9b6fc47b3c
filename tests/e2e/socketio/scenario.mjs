// One socket.io-client session against an ikisocket server.
// Usage: node scenario.mjs http://127.0.0.1:PORT [websocket|polling|default]
// (websocket: WebSocket only; polling: HTTP long-polling only; default: socket.io-client's
// default, long-polling first, then the upgrade to WebSocket).
// Prints one JSON object with what the client observed; the Python test checks it.
// Every wait is bounded: the whole run gives up after 20 seconds.
import { io } from "socket.io-client";
import { giveUpAfter, nextEvent, seen } from "./harness.mjs";

const url = process.argv[2];
const mode = process.argv[3] ?? "websocket";
const WAIT = 5000;
const options = { reconnection: false, timeout: WAIT, forceNew: true };
if (mode !== "default") options.transports = [mode];

const giveUp = giveUpAfter(20000);

const next = (socket, event) => nextEvent(socket, event, WAIT);

async function connected(socket) {
  const outcome = await Promise.race([
    next(socket, "connect").then(() => ({ ok: true })),
    next(socket, "connect_error").then(([error]) => ({ ok: false, message: error.message, data: error.data ?? null })),
  ]);
  return outcome;
}

// emitWithAck resolves with the first argument only: this gathers them all.
function call(socket, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(WAIT).emit(...args, (error, ...answer) => (error ? reject(error) : resolve(answer)));
  });
}

const toJSON = (value) => (Buffer.isBuffer(value) ? { bytes: [...value] } : value);

try {
  const ann = io(url, { ...options, auth: { name: "ann" } });
  seen.connect = await connected(ann);
  seen.idIsUuid = typeof ann.id === "string" && ann.id.length > 0;

  // Client -> server with an ack: the listener's return value (a tuple: two arguments).
  seen.echo = await call(ann, "echo", "hi", 2);
  seen.binaryEcho = (await call(ann, "echo", Buffer.from([1, 2, 3]), "tail")).map(toJSON);
  seen.slow = await ann.timeout(WAIT).emitWithAck("slow");

  // Server -> client binary: a named event with attachments, then a binary hub message.
  const blob = next(ann, "blob");
  const binaryMessage = next(ann, "message");
  ann.emit("blob-please");
  const [raw, nested] = await blob;
  seen.serverBinary = [toJSON(raw), { nested: nested.nested.map(toJSON) }, toJSON((await binaryMessage)[0])];

  // Server -> client with an ack: the server asks, we answer, it reports what it got.
  ann.on("question", (n, answer) => answer(n * 2, "thanks"));
  const reported = next(ann, "answer-was");
  ann.emit("ask", 21);
  seen.serverAck = await reported;

  // Rooms: bob and ann join "lobby"; ann says something there; bob gets it as "message".
  const bob = io(url, { ...options, auth: { name: "bob" } });
  seen.bobConnect = await connected(bob);
  seen.joined = await Promise.all([
    ann.timeout(WAIT).emitWithAck("join", "lobby"),
    bob.timeout(WAIT).emitWithAck("join", "lobby"),
  ]);
  const bobHears = next(bob, "message");
  await ann.timeout(WAIT).emitWithAck("say", "lobby", "hello lobby");
  seen.room = await bobHears;
  const roomEvent = next(bob, "news");
  await ann.timeout(WAIT).emitWithAck("news", "lobby", { n: 1 });
  seen.roomEvent = await roomEvent;

  // A broadcast from the hub reaches both as their "message" event.
  const annHears = next(ann, "message");
  const bobHearsToo = next(bob, "message");
  ann.emit("shout", "everyone!");
  seen.broadcast = [await annHears, await bobHearsToo];

  // A custom namespace over the same manager (and so the same WebSocket).
  const admin = ann.io.socket("/admin");
  admin.connect();
  seen.adminConnect = await connected(admin);
  seen.whoami = await call(admin, "whoami");

  // An unknown namespace is refused.
  const nope = io(`${url}/nope`, options);
  seen.unknown = await connected(nope);
  nope.close();

  // The connect hook refuses a bad token and lets a good one in.
  const bad = io(`${url}/private`, { ...options, auth: { token: "bad" } });
  seen.badToken = await connected(bad);
  bad.close();
  const good = io(`${url}/private`, { ...options, auth: { token: "s3cret" } });
  seen.goodToken = await connected(good);
  seen.auth = await good.timeout(WAIT).emitWithAck("auth");
  good.close();

  // The server closes the namespace connection: the client sees "io server disconnect".
  const gone = next(bob, "disconnect");
  bob.emit("kick-me");
  seen.kicked = await gone;

  // The transport the session ended up on (the default mode upgrades to WebSocket).
  if (mode === "default" && ann.io.engine.transport.name !== "websocket") {
    await next(ann.io.engine, "upgrade");
  }
  seen.transport = ann.io.engine.transport.name;

  admin.close();
  ann.close();
  clearTimeout(giveUp);
  console.log(JSON.stringify(seen));
  process.exit(0);
} catch (error) {
  console.log(JSON.stringify({ ...seen, error: String(error) }));
  process.exit(2);
}
