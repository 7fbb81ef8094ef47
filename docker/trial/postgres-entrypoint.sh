#!/bin/sh
# The stand-in postgres image's entrypoint (postgres.Containerfile): initialise an empty data
# directory with POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, then run the server on every
# address (local socket: trust, as in the official image; network: scram-sha-256).
set -e
export PGDATA=/var/lib/postgresql/data
BIN=/usr/lib/postgresql/15/bin
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  umask 077
  printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
  chown postgres /tmp/pwfile
  su postgres -c "$BIN/initdb -D $PGDATA -U $POSTGRES_USER --pwfile=/tmp/pwfile --auth-local=trust --auth-host=scram-sha-256"
  rm -f /tmp/pwfile
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  su postgres -c "$BIN/pg_ctl -D $PGDATA -o '-c listen_addresses=' -w start"
  su postgres -c "psql -U $POSTGRES_USER -d postgres -c 'CREATE DATABASE \"$POSTGRES_DB\"'"
  su postgres -c "$BIN/pg_ctl -D $PGDATA -w stop"
fi
exec su postgres -c "$BIN/postgres -D $PGDATA -c listen_addresses='*'"
