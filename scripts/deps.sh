#!/usr/bin/env bash
# What the test suite needs from the machine, checked by `make deps` (run by `make test` and .ci/run):
#   - the PostgreSQL server binaries with pg_stat_statements (throwaway primary/replica clusters),
#     psql/pg_isready, and a server answering on 127.0.0.1:5432 with trust auth for user postgres;
#   - promtool and prometheus (Debian package prometheus), prometheus-node-exporter,
#     prometheus-postgres-exporter (with its example queries.yaml), prometheus-blackbox-exporter (bench/),
#     prometheus-alertmanager (the webhook intake's end-to-end test);
#   - redis-server (with redis-cli) and a Redis answering on 127.0.0.1:6379 (the redis flag backend's tests;
#     started here, in memory, when nothing answers);
#   - python3 with venv support when .venv does not exist yet.
# When something is missing it is installed (apt-get) and PostgreSQL is created/started if we may: as root
# or with passwordless sudo. Otherwise the script prints ONE line naming the exact command and exits 1.
#
#   scripts/deps.sh            check, install what is missing, start PostgreSQL
#   scripts/deps.sh --check    check only: change nothing, exit 1 with the command to run
#   scripts/deps.sh --pg-bin   print the newest installed /usr/lib/postgresql/<v>/bin (empty if none)
#
# Environment: PYTHON (default python3) and VENV (default .venv), as in the Makefile.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PG_PORT=5432
EXPORTER_QUERIES=/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml

mode=install
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --pg-bin) mode=pg-bin ;;
  *) echo "usage: $0 [--check | --pg-bin]" >&2; exit 64 ;;
esac

die() { printf 'make deps: %s\n' "$*" >&2; exit 1; }
note() { printf 'make deps: %s\n' "$*" >&2; }
has() { command -v "$1" >/dev/null 2>&1; }

pg_bin() {
  local dir
  dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  printf '%s' "$dir"
}

if [[ $mode == pg-bin ]]; then
  pg_bin
  echo
  exit 0
fi

# Debian package names of whatever is missing, one per line.
missing_packages() {
  local bin
  bin=$(pg_bin)
  if [[ -z $bin || ! -x $bin/initdb || ! -x $bin/pg_ctl || ! -x $bin/postgres ]]; then
    echo postgresql  # brings postgresql-client and postgresql-common
  else
    [[ -e $bin/../lib/pg_stat_statements.so ]] || echo postgresql-contrib
    { has psql && has pg_isready; } || echo postgresql-client
    { has pg_lsclusters && has pg_ctlcluster && has pg_createcluster; } || echo postgresql-common
  fi
  { has promtool && has prometheus; } || echo prometheus
  has prometheus-node-exporter || echo prometheus-node-exporter
  { has prometheus-postgres-exporter && [[ -f $EXPORTER_QUERIES ]]; } || echo prometheus-postgres-exporter
  has prometheus-blackbox-exporter || echo prometheus-blackbox-exporter
  has prometheus-alertmanager || echo prometheus-alertmanager
  { has redis-server && has redis-cli; } || echo redis-server  # brings redis-tools (redis-cli)
  { has runuser && has setpriv; } || echo util-linux
  if ! has "$PYTHON"; then
    echo python3
  elif [[ ! -x $VENV/bin/python ]] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo python3-venv
  fi
}

# Root, passwordless sudo, or neither.
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
  can_root=1
elif has sudo && sudo -n true >/dev/null 2>&1; then
  as_root=(sudo -n)
  can_root=1
else
  as_root=()
  can_root=0
fi
if ((can_root)) && [[ ${#as_root[@]} -eq 0 ]]; then sudo_word=""; else sudo_word="sudo "; fi

# --- system packages -------------------------------------------------------------------------------------
mapfile -t need < <(missing_packages | awk '!seen[$0]++')
installed_postgres=0
clusters_before=""
if ((${#need[@]})); then
  install_cmd="apt-get install -y --no-install-recommends ${need[*]}"
  if [[ $mode == check ]]; then
    die "missing system packages for the tests; run: ${sudo_word}apt-get update && ${sudo_word}${install_cmd}"
  fi
  if ! has apt-get; then
    die "missing system packages for the tests (Debian names): ${need[*]}; install them with this system's package manager"
  fi
  if ((!can_root)); then
    die "missing system packages for the tests; run: sudo apt-get update && sudo ${install_cmd}  (then make test again)"
  fi
  [[ " ${need[*]} " == *" postgresql "* ]] && installed_postgres=1
  clusters_before=$(pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' || true)
  note "installing ${need[*]}"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  mapfile -t still < <(missing_packages | awk '!seen[$0]++')
  if ((${#still[@]})); then
    die "still missing after apt-get install: ${still[*]} (is /usr/share/doc excluded by a dpkg path-exclude?)"
  fi
fi

# --- PostgreSQL on 127.0.0.1:5432, trust for user postgres ------------------------------------------------
trusted() { psql -X -w -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; }

if ((installed_postgres)) && ((can_root)); then
  # Installing the server just now may have created a default cluster (peer/scram auth). It is empty and
  # ours: replace it with one the tests can use. Clusters that existed before are never touched.
  while read -r ver name _; do
    [[ -n $ver ]] || continue
    grep -qxF "$ver $name" <<<"$clusters_before" && continue
    note "replacing the cluster $ver/$name the package created with one using trust auth on 127.0.0.1:$PG_PORT"
    "${as_root[@]}" pg_dropcluster --stop "$ver" "$name"
  done < <(pg_lsclusters -h 2>/dev/null)
fi

if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
  version=$(basename "$(dirname "$(pg_bin)")")
  cluster=$(pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port {print $1, $2; exit}')
  if [[ -n $cluster ]]; then
    start_cmd="pg_ctlcluster --skip-systemctl-redirect $cluster start"
  else
    name=main
    pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main" {found=1} END {exit !found}' \
      && name=watchdog-tests
    start_cmd="pg_createcluster --port $PG_PORT --start $version $name -- --auth=trust"
  fi
  if [[ $mode == check ]] || ((!can_root)); then
    die "PostgreSQL is not answering on 127.0.0.1:$PG_PORT; run: ${sudo_word}$start_cmd"
  fi
  note "starting PostgreSQL: $start_cmd"
  # shellcheck disable=SC2086  # start_cmd is our own words, split on purpose
  "${as_root[@]}" $start_cmd >/dev/null
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 1
  done
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || die "PostgreSQL did not come up on 127.0.0.1:$PG_PORT ($start_cmd)"
fi

trusted || die "PostgreSQL on 127.0.0.1:$PG_PORT refuses user postgres without a password; the tests need" \
  "'host all postgres 127.0.0.1/32 trust' first in pg_hba.conf (then: ${sudo_word}pg_ctlcluster <version> <cluster> reload)"

# --- Redis on 127.0.0.1:6379 (the redis flag backend's contract tests) -----------------------------------
REDIS_PORT=6379
redis_up() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
if ! redis_up; then
  redis_dir=${TMPDIR:-/tmp}
  redis_cmd="redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no --dir $redis_dir"
  if [[ $mode == check ]]; then
    die "Redis is not answering on 127.0.0.1:$REDIS_PORT; run: $redis_cmd"
  fi
  note "starting Redis: $redis_cmd"
  # Needs no root: a throwaway in-memory server for the tests (nothing saved).
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$redis_dir" --logfile "$redis_dir/watchdog-tests-redis.log" >/dev/null
  for _ in $(seq 1 20); do
    redis_up && break
    sleep 0.5
  done
  redis_up || die "Redis did not come up on 127.0.0.1:$REDIS_PORT ($redis_cmd; log: $redis_dir/watchdog-tests-redis.log)"
fi
