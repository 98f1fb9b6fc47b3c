// Connection-state recovery with socket.io-client: the server drops the transport, the client
// reconnects by itself and must get back its id, its state and the events it missed, in order.
// Usage: node recovery.mjs http://127.0.0.1:PORT
// Prints one JSON object with what the client observed; the Python test checks it.
// Every wait is bounded: the whole run gives up after 20 seconds.
import { io } from "socket.io-client";
import { giveUpAfter, nextEvent, seen } from "./harness.mjs";

const url = process.argv[2];
const WAIT = 5000;

const giveUp = giveUpAfter(20000);

const next = (socket, event) => nextEvent(socket, event, WAIT);

try {
  // The server's connect hook is async: a bad token is refused once it finished.
  const bad = io(url, { transports: ["websocket"], reconnection: false, timeout: WAIT, forceNew: true, auth: { token: "no" } });
  seen.refused = (await next(bad, "connect_error"))[0].message;
  bad.close();

  const socket = io(url, {
    auth: { token: "ok" },
    transports: ["websocket"],
    reconnectionDelay: 50,
    reconnectionDelayMax: 200,
    timeout: WAIT,
    forceNew: true,
  });
  await next(socket, "connect");
  seen.firstRecovered = socket.recovered;
  const firstId = socket.id;
  // Under recovery the server appends an offset to each event: listeners see it as an
  // extra argument (socket.io's own behaviour); only the first argument is kept here.
  const heard = [];
  socket.on("tick", (n) => heard.push(["tick", n]));
  socket.on("message", (text) => heard.push(["message", text]));

  seen.join = await socket.timeout(WAIT).emitWithAck("remember", "lobby", "ann");
  const first = next(socket, "tick");
  socket.emit("tick-please", 1);
  await first;

  // The server closes the transport, then sends while the client is away.
  const gone = next(socket, "disconnect");
  const back = new Promise((resolve) => socket.io.once("reconnect", resolve));
  socket.emit("drop-me");
  seen.disconnect = (await gone)[0];
  await Promise.race([back, new Promise((_, reject) => setTimeout(() => reject(new Error("no reconnect")), WAIT))]);
  if (!socket.connected) await next(socket, "connect");
  seen.recovered = socket.recovered;
  seen.sameId = socket.id === firstId;
  seen.state = await socket.timeout(WAIT).emitWithAck("state");

  // Live again: one more event after the missed ones.
  const last = next(socket, "tick");
  socket.emit("tick-please", 9);
  await last;
  seen.heard = heard;

  socket.close();
  clearTimeout(giveUp);
  console.log(JSON.stringify(seen));
  process.exit(0);
} catch (error) {
  console.log(JSON.stringify({ ...seen, error: String(error) }));
  process.exit(2);
}
