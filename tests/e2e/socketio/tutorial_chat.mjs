// What the tutorial's page does, with socket.io-client in Node: node chat.mjs URL
// Prints one JSON line of what it saw; every wait is bounded by socket.io-client's timeouts.
import { io } from "socket.io-client";

const url = process.argv[2];
const seen = {};
const once = (socket, event) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event}`)), 10000);
    socket.once(event, (...args) => { clearTimeout(timer); resolve(args); });
  });

const stranger = io(url, { auth: { name: "<b>" }, reconnection: false });
seen.refused = (await once(stranger, "connect_error"))[0].message;
stranger.close();

const ann = io(url, { auth: { name: "ann" } }); // polling, then the upgrade, as a browser
await once(ann, "connect");
const bob = io(url, { auth: { name: "bob" }, transports: ["websocket"] });
const joined = once(ann, "joined");
await once(bob, "connect");
seen.joined = (await joined).slice(0, 2);
const line = once(ann, "chat");
seen.delivered = await bob.timeout(5000).emitWithAck("chat", "hi from node");
seen.chat = (await line).slice(0, 2);
seen.bobIn = await bob.timeout(5000).emitWithAck("join", "python");
seen.annIn = await ann.timeout(5000).emitWithAck("join", "python");
if (ann.io.engine.transport.name !== "websocket") await once(ann.io.engine, "upgrade");
seen.annTransport = ann.io.engine.transport.name;
ann.close();
bob.close();
console.log(JSON.stringify(seen));
