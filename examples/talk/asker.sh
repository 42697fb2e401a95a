#!/bin/sh
# The shell half of the README's worked example, with nothing but curl: ask the greeter
# (orchestratr launches it for the message), find its HTTP service, and print its answer.
set -eu
dir=${ORCHESTRATR_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/orchestratr}
api="http://127.0.0.1:$(cat "$dir/port")"

# 1. A message to the greeter from us ("asker", an app orchestratr knows). "launch": true
#    starts the greeter if it is not running; the message waits in its inbox meanwhile.
curl -sf -X POST -H 'Content-Type: application/json' \
     -d '{"from": "asker", "data": {"name": "ann"}, "launch": true}' \
     "$api/apps/greeter/message"

# 2. The greeter's service, once it is live (it offers it as it starts), and a call to it.
i=0
until record=$(curl -sf "$api/services/resolve?name=greeter-api"); do
    i=$((i + 1)); [ "$i" -lt 100 ] || { echo "greeter-api never appeared" >&2; exit 1; }
    sleep 0.1
done
port=$(printf '%s' "$record" | sed -n 's/.*"port": *\([0-9]*\).*/\1/p')
echo "found greeter-api on port $port"
curl -sf "http://127.0.0.1:$port/hello"
echo

# 3. The greeter's answer, in our own inbox (the unread messages, polled).
i=0
while reply=$(curl -sf "$api/apps/asker/messages?poll=true") && [ "$reply" = "[]" ]; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { echo "no answer from the greeter" >&2; exit 1; }
    sleep 0.1
done
echo "$reply"
