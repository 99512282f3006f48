#!/usr/bin/env bash
# Makes sure a memcached binary exists, and libmemcached's headers that the optional pylibmc
# client builds against; the tests start their own servers on free 127.0.0.1 ports.
# Installs Debian's packages when they are missing (CI and fresh machines run as root).
# The one installer of the project: `make test` (and `BENCH_MEMCACHED=1 make bench`) run it;
# batchq's Python code, its pytest plugin included, only looks for the binary (batchq.testing).
set -euo pipefail
packages=()
if ! command -v memcached >/dev/null 2>&1; then
    packages+=(memcached)
fi
# pylibmc (pip install 'batchq[pylibmc]') compiles against these; without them its tests skip.
if [ ! -e /usr/include/libmemcached/memcached.h ]; then
    packages+=(libmemcached-dev)
fi
if [ ! -e /usr/include/zlib.h ]; then
    packages+=(zlib1g-dev)
fi
if [ "${#packages[@]}" = "0" ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing ${packages[*]}, which cannot be installed here (need root and apt-get)." >&2
    echo "Install them yourself ('apt-get install memcached libmemcached-dev zlib1g-dev', or" >&2
    echo "'brew install memcached libmemcached' on macOS); until then the tests that need" >&2
    echo "memcached or pylibmc are skipped." >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Never let the package start a system-wide daemon: the tests start their own, on free ports.
policy_created=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_created=1
fi
apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq "${packages[@]}"; }
if [ "$policy_created" = "1" ]; then rm -f /usr/sbin/policy-rc.d; fi
command -v memcached
