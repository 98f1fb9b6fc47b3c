// Connection-state recovery across nodes: a client dropped on node A comes back to node B.
// Usage: node handoff.mjs http://127.0.0.1:PORT_A http://127.0.0.1:PORT_B
// A control client on each node sends ticks to the room while the client is away and while it
// comes back; the client must get each tick once, each node's in order, then live ones, with
// socket.recovered true, the same id, its room and its attribute (now on node B).
// Prints one JSON object with what the client observed; the Python test checks it.
// Every wait is bounded: the whole run gives up after 20 seconds.
import { io } from "socket.io-client";
import { giveUpAfter, nextEvent, seen } from "./harness.mjs";

const [urlA, urlB] = process.argv.slice(2);
const WAIT = 8000;

const giveUp = giveUpAfter(20000);

const next = (socket, event) => nextEvent(socket, event, WAIT);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const options = { transports: ["websocket"], timeout: WAIT, forceNew: true };

try {
  const onA = io(urlA, { ...options, reconnection: false });
  const onB = io(urlB, { ...options, reconnection: false });
  await Promise.all([next(onA, "connect"), next(onB, "connect")]);

  const socket = io(urlA, { ...options, reconnectionDelay: 50, reconnectionDelayMax: 200 });
  await next(socket, "connect");
  const firstId = socket.id;
  const heard = [];
  let wanted = null;
  socket.on("tick", (n) => {
    heard.push(n); // the offset the server appends is one more argument: not kept
    if (wanted && heard.length >= wanted.count) wanted.resolve();
  });
  const count = (n) =>
    new Promise((resolve, reject) => {
      wanted = { count: n, resolve };
      if (heard.length >= n) resolve();
      setTimeout(() => reject(new Error(`${heard.length} ticks of ${n} within ${WAIT} ms`)), WAIT);
    });

  seen.join = await socket.timeout(WAIT).emitWithAck("remember", "lobby", "ann");
  const tick = (node, name) => node.timeout(WAIT).emitWithAck("tick-please", name);
  await tick(onA, "a1");
  await count(1);

  // Reconnections go to node B from now on; node A drops the transport (and sends "a0").
  socket.io.uri = urlB;
  const gone = next(socket, "disconnect");
  const back = next(socket, "connect");
  socket.emit("drop-me");
  seen.disconnect = (await gone)[0];
  // Ticks from both nodes while the client is away, and while it comes back.
  for (let i = 1; i <= 4; i += 1) {
    await tick(onB, `b${i}`);
    await tick(onA, `a${i + 1}`);
    await sleep(15);
  }
  await back;
  seen.recovered = socket.recovered;
  seen.sameId = socket.id === firstId;
  seen.state = await socket.timeout(WAIT).emitWithAck("state");
  await tick(onA, "a9");
  await tick(onB, "b9");
  await count(12);
  await sleep(200); // anything more would be a duplicate
  seen.heard = heard;

  for (const s of [socket, onA, onB]) s.close();
  clearTimeout(giveUp);
  console.log(JSON.stringify(seen));
  process.exit(0);
} catch (error) {
  console.log(JSON.stringify({ ...seen, error: String(error) }));
  process.exit(2);
}
