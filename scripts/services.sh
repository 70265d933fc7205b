#!/usr/bin/env bash
# Make sure the servers the tests use are installed and running on 127.0.0.1:
# PostgreSQL 5432, Redis 6379, RabbitMQ 5672, NATS JetStream 4222. Starts what is down and
# installs (Debian packages, as root) what is missing. etcd, nginx and dnsmasq are started by the
# tests themselves; they are only installed here. Prints one line per server.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {  # port, seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do up "$1" && return 0; sleep 0.1; done
  return 1
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [ "$(id -u)" = 0 ] || return 1
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

ensure() {  # name, port, probe-binary, package(s), start command
  local name=$1 port=$2 bin=$3 pkgs=$4 start=$5
  if up "$port"; then echo "services: $name up on $port"; return 0; fi
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "services: installing $name ($pkgs)"
    apt_install $pkgs || { echo "services: could not install $name"; return 1; }
  fi
  echo "services: starting $name"
  bash -c "$start" >/dev/null 2>&1 || true
  if wait_up "$port" 60; then echo "services: $name up on $port"; else echo "services: $name did not start"; return 1; fi
}

status=0
ensure postgres 5432 pg_ctlcluster "postgresql" \
  'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main start' || status=1
ensure redis 6379 redis-server "redis-server" \
  'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no' || status=1
ensure rabbitmq 5672 rabbitmq-server "rabbitmq-server" 'rabbitmq-server -detached' || status=1
ensure nats 4222 nats-server "nats-server" \
  'mkdir -p /var/lib/nats-server; start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server' || status=1
for tool in etcd:etcd-server nginx:nginx dnsmasq:dnsmasq-base node:nodejs npm:npm; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || apt_install "${tool#*:}" || echo "services: could not install ${tool#*:}"
done
# A service that is still down makes the tests that need it fail (CI) or skip (locally);
# they say which. This script itself never fails the build.
[ "$status" = 0 ] || echo "services: some servers are not running (see above)"
exit 0
