#!/usr/bin/env bash
# Try the VRRP failover on this machine: two fulcrums with keepalived in front of two backends,
# on test hosts in network namespaces of its own (addresses 10.250.17.0/24 that exist only inside
# them), and a client opening a connection through the virtual address every 20 ms. It kills the
# active fulcrum (kill -9), prints how long new connections failed, and removes everything it
# made on the way out. Needs root, iproute2 and keepalived (apt-get install -y iproute2
# keepalived), and the project installed (npm ci). Run from anywhere: examples/ha/try.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
node=node_modules/.bin/node
[ -x "$node" ] && [ -f dist/cli.js ] || { echo "try.sh: run npm ci first" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "try.sh: needs root (network namespaces)" >&2; exit 2; }
for command in ip keepalived; do
  command -v "$command" >/dev/null || { echo "try.sh: needs $command" >&2; exit 2; }
done

p="fha$$"                     # every name this run makes starts with it
net=10.250.17
vip=$net.100
dir=$(mktemp -d)
hosts=(sw cl lb1 lb2 be1 be2)

# Every process in the namespaces gets SIGTERM (keepalived stops its own children), then
# SIGKILL if it is still there; then the namespaces go.
cleanup() {
  local pids=()
  for host in "${hosts[@]}"; do pids+=($(ip netns pids "$p$host" 2>/dev/null || true)); done
  [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  sleep 0.5
  [ "${#pids[@]}" -gt 0 ] && kill -9 "${pids[@]}" 2>/dev/null || true
  for host in "${hosts[@]}"; do ip netns del "$p$host" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

inside() { local host=$1; shift; ip netns exec "$p$host" "$@"; }

# Hosts on one bridge: the client .10, balancers .2 and .3, backends .21 and .22.
for host in "${hosts[@]}"; do ip netns add "$p$host"; inside "$host" ip link set lo up; done
inside sw ip link add br0 type bridge
inside sw ip link set br0 up
plug() {
  local host=$1 address=$2
  ip link add "$p$host" type veth peer name "${p}${host}p"
  ip link set "$p$host" netns "$p$host"
  ip link set "${p}${host}p" netns "${p}sw"
  inside "$host" ip link set "$p$host" name eth0
  inside "$host" ip addr add "$address/24" dev eth0
  inside "$host" ip link set eth0 up
  inside sw ip link set "${p}${host}p" master br0
  inside sw ip link set "${p}${host}p" up
}
plug cl "$net.10"; plug lb1 "$net.2"; plug lb2 "$net.3"; plug be1 "$net.21"; plug be2 "$net.22"

inside be1 "$node" test/fixtures/ns-backend.ts 9000 be1 >/dev/null &
disown
inside be2 "$node" test/fixtures/ns-backend.ts 9000 be2 >/dev/null &
disown

start_fulcrum() {
  local host=$1
  cat >"$dir/$host.json" <<JSON
{ "workers": 1, "statsSocket": "$dir/$host.sock", "grace": "3s", "log": { "level": "warn" },
  "frontends": [{ "name": "vip", "listen": ["$vip:8000"], "health": { "interval": "200ms" },
    "backends": ["$net.21:9000,name=be1", "$net.22:9000,name=be2"] }] }
JSON
  # Not through inside(): $! must be fulcrum itself (ip netns exec execs it), to kill it below.
  ip netns exec "$p$host" "$node" bin/fulcrum --config "$dir/$host.json" >>"$dir/$host.log" 2>&1 &
  echo $! >"$dir/$host.pid"
  disown
  for _ in $(seq 100); do
    "$node" bin/fulcrum ready --socket "$dir/$host.sock" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "try.sh: fulcrum in $host did not get ready:" >&2; cat "$dir/$host.log" >&2; exit 1
}

start_keepalived() {
  local host=$1 self=$2 peer=$3 priority=$4 state=$5
  cat >"$dir/$host.conf" <<CONF
global_defs {
  router_id $host
  script_user root
  vrrp_version 3
}
vrrp_script fulcrum_ready {
  script "$PWD/$node $PWD/bin/fulcrum ready --socket $dir/$host.sock"
  interval 1
  timeout 2
  fall 1
  rise 1
}
vrrp_instance fulcrum {
  state $state
  interface eth0
  virtual_router_id 51
  priority $priority
  advert_int 0.2
  unicast_src_ip $self
  unicast_peer {
    $peer
  }
  virtual_ipaddress {
    $vip/24 dev eth0
  }
  track_script {
    fulcrum_ready
  }
}
CONF
  inside "$host" keepalived --dont-fork --log-console --vrrp --use-file "$dir/$host.conf" \
    --pid "$dir/$host-k.pid" --vrrp_pid "$dir/$host-v.pid" >"$dir/$host-keepalived.log" 2>&1 &
  disown
}

# The address is local on both balancers (on lo), so each can listen on it and the one giving it
# up still answers on it while it moves; only the holder (keepalived puts it on eth0) answers ARP.
for host in lb1 lb2; do
  inside "$host" ip addr add "$vip/32" dev lo
  inside "$host" sysctl -q -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
done
start_fulcrum lb1
start_fulcrum lb2
start_keepalived lb1 "$net.2" "$net.3" 254 MASTER
start_keepalived lb2 "$net.3" "$net.2" 250 BACKUP
# grep reads the whole output (with -q it could stop early, and pipefail would see ip's SIGPIPE).
holds() { inside "$1" ip addr show eth0 | grep "$vip/24" >/dev/null; }
for _ in $(seq 150); do holds lb1 && break; sleep 0.1; done
holds lb1 || { echo "try.sh: lb1 never took $vip" >&2; exit 1; }
echo "lb1 holds $vip; a client connects through it every 20 ms"

inside cl "$node" test/fixtures/ns-client.ts probe "$vip" 8000 20 3000 >"$dir/probe.log" &
disown
sleep 1
killed=$(date +%s%3N)
kill -9 "$(cat "$dir/lb1.pid")"
echo "killed the fulcrum on lb1 (kill -9)"
sleep 4
"$node" -e '
  const [file, killed] = [process.argv[1], Number(process.argv[2])];
  const lines = require("fs").readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  // Connections started just after the kill may still have been taken by the dying process:
  // the gap runs from the kill to the first connection that works after the first that failed.
  const after = lines.filter((l) => l.at >= killed);
  const failed = after.find((l) => !l.ok);
  const back = failed === undefined ? after[0] : after.find((l) => l.ok && l.at > failed.at);
  if (back === undefined) { console.log("no connection got through after the kill"); process.exit(1); }
  console.log(`new connections work again through lb2 ${back.at - killed} ms after the kill; ` +
    `${after.filter((l) => !l.ok && l.at < back.at).length} connects failed meanwhile`);
' "$dir/probe.log" "$killed"
holds lb2 && echo "lb2 holds $vip now"
