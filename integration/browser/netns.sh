#!/usr/bin/env bash
# Runs one browser scenario against a fresh sorad (one node, or a cluster of
# two), inside the network namespace the caller made for it
# (integration/browser_test.go runs this under
# `unshare --net --pid --fork --kill-child`): lo up, a veth pair whose two
# ends both stay in the namespace (veth-a 198.18.0.1/24, plus 198.18.0.3/24
# for a second node; veth-b 198.18.0.2/24; default route via .2) so Chromium
# has a non-loopback address to gather; each sorad on its own address with
# the default ports; then the node driver.
#
# usage: netns.sh SORAD_BINARY WORK_DIR SCENARIO CHROMIUM [NODES]
# NODES is 1 (the default) or 2:
#   1: browser@198.18.0.1; WORK_DIR gets sorad.log, sorad.status, data/
#   2: browser-a@198.18.0.1 and browser-b@198.18.0.3, each listing the other
#      in contact_node_name_list; WORK_DIR gets sorad-a.log, sorad-b.log,
#      sorad-a.status, sorad-b.status, data-a/, data-b/
# A status file's first line is sorad's exit status after SIGTERM ("exit
# status 0"), its second how long the stop took.
# With BROWSER_API_BEARER_TOKEN set, every node requires it on its API
# (api_bearer_token) and the driver sends it.
# stdout: the driver's JSON. WORK_DIR also gets driver.stderr and the
# browser profile.
set -euo pipefail
sorad_bin=$1 work=$2 scenario=$3 chromium=$4 nodes=${5:-1}
here=$(cd "$(dirname "$0")" && pwd)

case $nodes in
1)
  names=("browser@198.18.0.1")
  addrs=(198.18.0.1)
  tags=("")
  ;;
2)
  names=("browser-a@198.18.0.1" "browser-b@198.18.0.3")
  addrs=(198.18.0.1 198.18.0.3)
  tags=(-a -b)
  ;;
*)
  echo "netns.sh: NODES must be 1 or 2, not $nodes" >&2
  exit 2
  ;;
esac

# Refuse to touch anything but a fresh namespace: it has lo and nothing else.
links=$(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
if [ "$links" != "lo " ]; then
  echo "netns.sh: not in a fresh network namespace (links: $links); refusing" >&2
  exit 3
fi
ip link set lo up
ip link add veth-a type veth peer name veth-b
for addr in "${addrs[@]}"; do
  ip addr add "$addr/24" dev veth-a
done
ip addr add 198.18.0.2/24 dev veth-b
ip link set veth-a up
ip link set veth-b up
ip route add default via 198.18.0.2 dev veth-a

mkdir -p "$work/tmp" "$work/profile"
cd "$work"
# The nodes' addresses are not loopback, so their cluster port needs a
# secret (sorad refuses to start without one); each run makes its own.
cluster_secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
for i in "${!names[@]}"; do
  tag=${tags[$i]}
  contacts=()
  for j in "${!names[@]}"; do
    if [ "$j" != "$i" ]; then contacts+=("${names[$j]}"); fi
  done
  args=(--config= --node_name="${names[$i]}" --listen_address="${addrs[$i]}"
    --data_dir="$work/data$tag" --log_format=text --log_level=debug
    --cluster_secret="$cluster_secret")
  # The token goes in sorad's environment, not on its command line.
  envs=()
  if [ -n "${BROWSER_API_BEARER_TOKEN:-}" ]; then
    envs+=(SORAD_API_BEARER_TOKEN="$BROWSER_API_BEARER_TOKEN")
  fi
  if [ "${#contacts[@]}" -gt 0 ]; then
    args+=(--contact_node_name_list="$(IFS=,; echo "${contacts[*]}")")
  fi
  mkdir -p "$work/data$tag"
  env "${envs[@]}" "$sorad_bin" "${args[@]}" >"$work/sorad$tag.log" 2>&1 &
  pids+=($!)
done

# Wait for every node's API port; the driver then waits until the nodes
# form one cluster.
for i in "${!names[@]}"; do
  for _ in $(seq 150); do
    if (exec 3<>"/dev/tcp/${addrs[$i]}/3000") 2>/dev/null; then break; fi
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "netns.sh: sorad ${names[$i]} exited before listening" >&2
      exit 4
    fi
    sleep 0.1
  done
done

# Chromium (and the audio and desktop libraries it loads) write under
# $HOME and the XDG directories: keep all of that in the work directory.
mkdir -p "$work/home/.config" "$work/home/.cache"
urls=()
for addr in "${addrs[@]}"; do
  urls+=(--signaling-url "ws://$addr:5000/signaling" --api-url "http://$addr:3000/")
done
set +e
HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_CACHE_HOME="$work/home/.cache" \
  XDG_RUNTIME_DIR="$work/tmp" TMPDIR="$work/tmp" node "$here/driver.mjs" --scenario "$scenario" \
  "${urls[@]}" --chromium "$chromium" --profile "$work/profile" \
  >"$work/driver.json" 2>"$work/driver.stderr"
driver_status=$?

# Stop every node as an operator does, all at once; give them 15 s.
stop_started=$(date +%s%N)
stopped_ms=()
for i in "${!pids[@]}"; do
  kill -TERM "${pids[$i]}"
  stopped_ms[$i]=""
done
for _ in $(seq 300); do
  alive=0
  for i in "${!pids[@]}"; do
    if [ -z "${stopped_ms[$i]}" ]; then
      if kill -0 "${pids[$i]}" 2>/dev/null; then
        alive=1
      else
        stopped_ms[$i]=$(( ($(date +%s%N) - stop_started) / 1000000 ))
      fi
    fi
  done
  [ "$alive" = 0 ] && break
  sleep 0.05
done
for i in "${!pids[@]}"; do
  pid=${pids[$i]} status="$work/sorad${tags[$i]}.status"
  if [ -z "${stopped_ms[$i]}" ]; then
    echo "killed: no exit within 15s of SIGTERM" >"$status"
    kill -KILL "$pid"
    wait "$pid"
  else
    wait "$pid"
    echo "exit status $?" >"$status"
    echo "gone ${stopped_ms[$i]} ms after SIGTERM (polled every 50 ms)" >>"$status"
  fi
done
cat "$work/driver.json"
exit "$driver_status"
