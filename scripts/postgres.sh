#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests of the PostgreSQL backend.
#
#   eval "$(scripts/postgres.sh start)"   # exports CASEBRIDGE_TEST_POSTGRES
#   scripts/postgres.sh restart           # a fast restart (the database-restart test)
#   scripts/postgres.sh stop              # stops it and removes the cluster
#
# `start` installs PostgreSQL from Debian's packages if it is missing, creates
# a cluster in a new temporary directory owned by an unprivileged user (the
# `postgres` user when run as root), starts it on 127.0.0.1 on a free port
# (and a Unix socket in that directory), creates the role `casebridge` with a
# random password and the right to create databases (each test makes its
# own), and the database `casebridge`. It prints shell lines exporting
# CASEBRIDGE_TEST_POSTGRES (the connection string, password included: the
# cluster lives for one run) and CASEBRIDGE_TEST_POSTGRES_DIR (the cluster,
# which `stop` reads; `stop DIR` names it instead), and
# CASEBRIDGE_TEST_POSTGRES_ROOT, the CA certificate of the server's TLS
# certificate (for localhost and 127.0.0.1). Everything else it says
# goes to standard error.
set -euo pipefail

say() { echo "postgres.sh: $*" >&2; }

pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

install_postgres() {
    if pg_bin >/dev/null; then
        return 0
    fi
    say "installing PostgreSQL from Debian's packages"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
    fi
    pg_bin >/dev/null || {
        say "PostgreSQL was installed but no initdb was found under /usr/lib/postgresql"
        exit 1
    }
}

# Runs a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    install_postgres
    local bin dir password port tries=0
    bin=$(pg_bin)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/casebridge-pg.XXXXXX")
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || {
            say "the postgres user is missing; is the postgresql package installed?"
            exit 1
        }
        chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        say "initdb failed"
        exit 1
    }
    # TLS with a certificate of our own CA for localhost and 127.0.0.1, so
    # that the tests can check verify-full against it (TCP takes both plain
    # and TLS connections).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=casebridge test CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$dir/data/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 2 -extfile "$dir/server.ext" -out "$dir/data/server.crt" 2>/dev/null
    chmod 600 "$dir/data/server.key"
    chmod 644 "$dir/ca.crt"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir/data/server.key" "$dir/data/server.crt"
    fi
    # Only the owner's Unix socket is trusted; TCP asks for a password.
    cat >"$dir/data/pg_hba.conf" <<EOF
local all postgres trust
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
EOF
    while :; do
        port=$((20000 + RANDOM % 30000))
        tries=$((tries + 1))
        if port_in_use "$port"; then
            continue
        fi
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c synchronous_commit=on -c fsync=on -c ssl=on" \
            start >&2; then
            break
        fi
        if [ "$tries" -ge 5 ]; then
            tail -n 20 "$dir/server.log" >&2 || true
            say "PostgreSQL did not start"
            exit 1
        fi
    done
    as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q >&2 <<EOF
CREATE ROLE casebridge LOGIN CREATEDB PASSWORD '$password';
CREATE DATABASE casebridge OWNER casebridge;
EOF
    say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') listening on 127.0.0.1:$port, cluster in $dir"
    echo "export CASEBRIDGE_TEST_POSTGRES='postgres://casebridge:$password@127.0.0.1:$port/casebridge'"
    echo "export CASEBRIDGE_TEST_POSTGRES_DIR='$dir'"
    echo "export CASEBRIDGE_TEST_POSTGRES_ROOT='$dir/ca.crt'"
}

# The cluster named by $2 of `$1 [DIR]`, or by CASEBRIDGE_TEST_POSTGRES_DIR.
cluster() {
    local dir=${2:-${CASEBRIDGE_TEST_POSTGRES_DIR:-}}
    if [ -z "$dir" ]; then
        say "$1: no cluster named (pass its directory or set CASEBRIDGE_TEST_POSTGRES_DIR)"
        exit 1
    fi
    case "$dir" in
    */casebridge-pg.*) ;;
    *)
        say "$1: $dir is not a cluster this script made"
        exit 1
        ;;
    esac
    echo "$dir"
}

# Restarts the server with the options it was started with, closing every
# connection at once (`-m fast`), and waits until it accepts them again.
restart() {
    local dir
    dir=$(cluster restart "${1:-}")
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >&2
}

stop() {
    local dir
    dir=$(cluster stop "${1:-}")
    if [ -d "$dir/data" ]; then
        as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    fi
    rm -rf "$dir"
    say "stopped and removed $dir"
}

case "${1:-}" in
start) start ;;
restart) restart "${2:-}" ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: $0 start | restart [DIR] | stop [DIR]" >&2
    exit 2
    ;;
esac
