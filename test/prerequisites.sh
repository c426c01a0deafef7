#!/usr/bin/env bash
# Installs, from Debian's packages, the real servers and clients the end-to-end tests and the benchmark
# drive (nothing of ours is mocked, so they must exist). Installs only what is missing; needs root.
set -euo pipefail
# Commands, and the Debian package of each. javac, not java: a single-file source launch (`java Client.java`)
# needs the JDK's compiler, which a JRE lacks; nc is OpenBSD's netcat (the tests use its -N).
declare -A pkg=(
  [redis-server]=redis-server [redis-cli]=redis-tools [curl]=curl [iperf3]=iperf3
  [ip]=iproute2 [nft]=nftables [tinyproxy]=tinyproxy [psql]=postgresql-client
  [ssh]=openssh-client [sshd]=openssh-server [microsocks]=microsocks [rsvg-convert]=librsvg2-bin
  [gcc]=gcc [mariadb]=mariadb-client [mariadbd]=mariadb-server [ruby]=ruby [php]=php-cli [nc]=netcat-openbsd
  [javac]=default-jdk-headless [systemd-analyze]=systemd [chromium]=chromium [nginx]=nginx [dig]=dnsutils
  [git]=git
)
missing=()
for cmd in "${!pkg[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/usr/bin/$cmd" ] || missing+=("${pkg[$cmd]}")
done
# Not on PATH: PostgreSQL's server (the hook tests run initdb and postgres from its bin directory) and
# glibc's static archive (the hook tests build a static binary with gcc -static).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
compgen -G '/usr/lib/*/libc.a' >/dev/null || missing+=(libc6-dev)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "prerequisites: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "prerequisites: missing ${missing[*]}: run 'sudo npm run prerequisites' (Debian/Ubuntu)" >&2
  exit 1
fi
echo "prerequisites: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the packages' services from starting: tests start their own servers on free ports.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "prerequisites: installed"
