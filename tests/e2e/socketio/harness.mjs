// What the socket.io-client scripts the Python tests run have in common: the object that
// collects what the client observed (printed as JSON at the end), a bound on the whole run,
// and a bounded wait for one event.

export const seen = {};

// After `ms`, print what was observed so far with `gaveUp: true` and exit with status 3.
export function giveUpAfter(ms) {
  return setTimeout(() => {
    console.log(JSON.stringify({ ...seen, gaveUp: true }));
    process.exit(3);
  }, ms);
}

// The arguments of `socket`'s next `event`, or an error after `wait` ms without one.
export function nextEvent(socket, event, wait) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${wait} ms`)), wait);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}
