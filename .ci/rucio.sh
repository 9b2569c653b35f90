#!/usr/bin/env bash
# The Rucio server that the DSS tests register datasets in: the `rucio` package from PyPI in a
# virtual environment of its own (its pins differ from the portal's), its REST API served by
# gunicorn on 127.0.0.1, its database a SQLite file (hence a single worker: SQLite and several
# worker processes give "database is locked" on concurrent writes).
#
#   bash .ci/rucio.sh start    # install if needed, bootstrap, start (or find running), print exports
#   bash .ci/rucio.sh stop     # stop the server started from this base dir
#   eval "$(bash .ci/rucio.sh start | grep '^export ')"
#
# Settings (environment): DSS_RUCIO_BASE (default /tmp/dss-rucio), DSS_RUCIO_PORT (default
# 18180). Bootstrap: the root account with the userpass identity dss/dss-secret. The tests add
# their own scopes, RSEs and protocols through the client.
set -euo pipefail

BASE=${DSS_RUCIO_BASE:-/tmp/dss-rucio}
PORT=${DSS_RUCIO_PORT:-18180}
VENV=$BASE/venv
HOME_DIR=$BASE/home
DB=$BASE/rucio.db
PIDFILE=$HOME_DIR/gunicorn.pid
URL=http://127.0.0.1:$PORT
USERNAME=dss
PASSWORD=dss-secret

log() { echo "rucio.sh: $*" >&2; }

alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

answers() { curl -sf --max-time 2 "$URL/ping" >/dev/null 2>&1; }

install() {
  # find_spec, not import: importing rucio's web app already wants a rucio.cfg
  [ -x "$VENV/bin/gunicorn" ] && "$VENV/bin/python" -c 'import importlib.util as u, sys
sys.exit(0 if u.find_spec("rucio") and u.find_spec("flask") else 1)' 2>/dev/null && return 0
  log "installing rucio 41 and gunicorn into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >"$BASE/pip.log" 2>&1
  "$VENV/bin/pip" install -q 'rucio>=41,<42' gunicorn >>"$BASE/pip.log" 2>&1 \
    || { tail -20 "$BASE/pip.log" >&2; exit 1; }
}

configure() {
  local site
  site=$("$VENV/bin/python" -c 'import rucio, os; print(os.path.dirname(os.path.dirname(rucio.__file__)))')
  mkdir -p "$HOME_DIR/etc" "$HOME_DIR/logs" "$HOME_DIR/token"
  cat >"$HOME_DIR/etc/rucio.cfg" <<EOF
[common]
logdir = $HOME_DIR/logs
loglevel = INFO

[client]
rucio_host = $URL
auth_host = $URL
auth_type = userpass
username = $USERNAME
password = $PASSWORD
account = root
request_retries = 3
auth_token_file_path = $HOME_DIR/token/auth_token_for_account_root

[database]
default = sqlite:///$DB

[bootstrap]
userpass_identity = $USERNAME
userpass_pwd = $PASSWORD
userpass_email = $USERNAME@example.org

[alembic]
cfg = $HOME_DIR/etc/alembic.ini

[monitor]
enable_metrics = False

[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash
support = none
EOF
  cat >"$HOME_DIR/etc/alembic.ini" <<EOF
[alembic]
script_location = $site/rucio/db/sqla/migrate_repo
sqlalchemy.url = sqlite:///$DB

[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
qualname =
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
EOF
}

bootstrap() {
  [ -f "$DB" ] && return 0
  log "bootstrapping $DB (tables, base VO, root account with userpass $USERNAME)"
  "$VENV/bin/python" -c 'from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
build_database(); create_base_vo(); create_root_account()' >"$HOME_DIR/logs/bootstrap.log" 2>&1 \
    || { rm -f "$DB"; tail -20 "$HOME_DIR/logs/bootstrap.log" >&2; exit 1; }
}

exports() {
  echo "export DSS_RUCIO_URL=$URL"
  echo "export DSS_RUCIO_ACCOUNT=root"
  echo "export DSS_RUCIO_AUTH_TYPE=userpass"
  echo "export DSS_RUCIO_USERNAME=$USERNAME"
  echo "export DSS_RUCIO_PASSWORD=$PASSWORD"
}

start() {
  mkdir -p "$BASE"
  if [ -f "$PIDFILE" ] && alive "$(cat "$PIDFILE")" && answers; then
    log "already running on $URL"
    exports
    return 0
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    log "port $PORT is taken by another process; set DSS_RUCIO_PORT"
    exit 1
  fi
  install
  configure
  export RUCIO_CONFIG=$HOME_DIR/etc/rucio.cfg
  bootstrap
  # --no-control-socket: gunicorn >= 24 would otherwise create ~/.gunicorn/gunicorn.ctl
  local extra=()
  "$VENV/bin/gunicorn" --help 2>/dev/null | grep -q -- --no-control-socket && extra=(--no-control-socket)
  setsid "$VENV/bin/gunicorn" -b "127.0.0.1:$PORT" -w 1 "${extra[@]}" --timeout 120 \
    --pid "$PIDFILE" --access-logfile "$HOME_DIR/logs/access.log" \
    --error-logfile "$HOME_DIR/logs/gunicorn.log" \
    rucio.web.rest.flaskapi.v1.main:application >"$HOME_DIR/logs/server.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 150); do
    if answers; then
      log "up on $URL ($(curl -s "$URL/ping"))"
      exports
      return 0
    fi
    sleep 0.2
  done
  log "the server did not answer on $URL within 30 s"
  tail -30 "$HOME_DIR/logs/gunicorn.log" "$HOME_DIR/logs/server.log" >&2 || true
  exit 1
}

stop() {
  [ -f "$PIDFILE" ] || { log "not running"; return 0; }
  local pid i
  pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
