// A WHATWG EventSource (the npm `eventsource` package) reading orchestratr's event stream.
// Usage: node follow.mjs URL; prints one JSON line per message, open and error to stdout.
import { EventSource } from "eventsource";

const types = ["state", "registered", "unregistered", "reloaded", "reload_failed",
  "launch_failed", "ready_timeout", "lease_expired", "hotkey", "reset", "overflow"];
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const source = new EventSource(process.argv[2]);
source.onopen = () => print({ kind: "open" });
source.onerror = () => print({ kind: "error", readyState: source.readyState });
for (const type of types) {
  source.addEventListener(type, (event) => print({
    kind: "event", type, id: event.lastEventId, data: JSON.parse(event.data) }));
}
process.on("SIGTERM", () => { source.close(); process.exit(0); });
