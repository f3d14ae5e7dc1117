#!/usr/bin/env bash
# Runs one browser scenario against a fresh sorad, inside the network
# namespace the caller made for it (integration/browser_test.go runs this
# under `unshare --net --pid --fork --kill-child`): lo up, a veth pair whose
# two ends both stay in the namespace (198.18.0.1/30 and 198.18.0.2/30,
# default route via .2) so Chromium has a non-loopback address to gather;
# sorad on 198.18.0.1 with its default ports; then the node driver.
#
# usage: netns.sh SORAD_BINARY WORK_DIR SCENARIO CHROMIUM
# stdout: the driver's JSON. WORK_DIR gets sorad.log, driver.stderr,
# sorad.status (sorad's exit status after SIGTERM) and the browser profile.
set -euo pipefail
sorad_bin=$1 work=$2 scenario=$3 chromium=$4
here=$(cd "$(dirname "$0")" && pwd)
addr=198.18.0.1

# Refuse to touch anything but a fresh namespace: it has lo and nothing else.
links=$(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
if [ "$links" != "lo " ]; then
  echo "netns.sh: not in a fresh network namespace (links: $links); refusing" >&2
  exit 3
fi
ip link set lo up
ip link add veth-a type veth peer name veth-b
ip addr add 198.18.0.1/30 dev veth-a
ip addr add 198.18.0.2/30 dev veth-b
ip link set veth-a up
ip link set veth-b up
ip route add default via 198.18.0.2 dev veth-a

mkdir -p "$work/data" "$work/tmp" "$work/profile"
cd "$work"
"$sorad_bin" --config= --node_name="browser@$addr" --listen_address="$addr" \
  --data_dir="$work/data" --log_format=text --log_level=debug >"$work/sorad.log" 2>&1 &
sorad_pid=$!

# Wait for the API port; the driver then waits until the node serves.
for _ in $(seq 150); do
  if (exec 3<>"/dev/tcp/$addr/3000") 2>/dev/null; then break; fi
  if ! kill -0 "$sorad_pid" 2>/dev/null; then
    echo "netns.sh: sorad exited before listening" >&2
    exit 4
  fi
  sleep 0.1
done

# Chromium (and the audio and desktop libraries it loads) write under
# $HOME and the XDG directories: keep all of that in the work directory.
mkdir -p "$work/home/.config" "$work/home/.cache"
set +e
HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_CACHE_HOME="$work/home/.cache" \
  XDG_RUNTIME_DIR="$work/tmp" TMPDIR="$work/tmp" node "$here/driver.mjs" --scenario "$scenario" \
  --signaling-url "ws://$addr:5000/signaling" --api-url "http://$addr:3000/" \
  --chromium "$chromium" --profile "$work/profile" \
  >"$work/driver.json" 2>"$work/driver.stderr"
driver_status=$?

# Stop sorad as an operator does; give it 15 s.
kill -TERM "$sorad_pid"
for _ in $(seq 150); do
  kill -0 "$sorad_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$sorad_pid" 2>/dev/null; then
  echo "killed: no exit within 15s of SIGTERM" >"$work/sorad.status"
  kill -KILL "$sorad_pid"
  wait "$sorad_pid"
else
  wait "$sorad_pid"
  echo "exit status $?" >"$work/sorad.status"
fi
cat "$work/driver.json"
exit "$driver_status"
