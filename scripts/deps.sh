#!/usr/bin/env bash
# Installs what RahatBack needs on a Debian machine, idempotently: the
# PostgreSQL server binaries (the private cluster of `rahatback up` and of the
# tests is made with them), and for the tests their command-line tools and
# Chromium. Sourced by scripts/up and scripts/test.
set -euo pipefail

as_root() {
	if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

have_pg_server() {
	command -v initdb >/dev/null 2>&1 && return 0
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

apt_updated=
apt_install() {
	if [[ -z $apt_updated ]]; then
		as_root apt-get update -qq
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"
}

ensure_postgres_binaries() {
	if ! have_pg_server; then
		echo "installing PostgreSQL server binaries (Debian package postgresql)…" >&2
		apt_install postgresql
	fi
}

# ensure_test_tools installs the command-line tools tests run the way a
# user would to restore a downloaded backup without RahatBack: zstd, age,
# and script (util-linux) to answer age's passphrase prompt.
ensure_test_tools() {
	command -v zstd >/dev/null 2>&1 || apt_install zstd
	command -v age >/dev/null 2>&1 || apt_install age
	command -v script >/dev/null 2>&1 || apt_install bsdutils
}

# ensure_mariadb_client installs the MariaDB client tools (mariadb-dump,
# mariadb), which the agent runs to back up and restore MySQL and MariaDB.
ensure_mariadb_client() {
	if ! command -v mariadb-dump >/dev/null 2>&1 && ! command -v mysqldump >/dev/null 2>&1; then
		echo "installing the MariaDB client tools (Debian package mariadb-client)…" >&2
		apt_install mariadb-client
	fi
}

# ensure_mariadb_server installs the MariaDB server binaries: tests start
# private servers of their own with them (package mariadbserver) and never
# use the machine's service.
ensure_mariadb_server() {
	if ! command -v mariadbd >/dev/null 2>&1 && [[ ! -x /usr/sbin/mariadbd ]]; then
		echo "installing the MariaDB server binaries for the tests (Debian package mariadb-server)…" >&2
		apt_install mariadb-server
	fi
	ensure_mariadb_client
}

# ensure_chromium installs Debian's Chromium, which the dashboard's browser
# tests drive (github.com/chromedp/chromedp); without it they are skipped.
ensure_chromium() {
	if ! command -v chromium >/dev/null 2>&1; then
		echo "installing Chromium for the dashboard's browser tests (Debian package chromium)…" >&2
		apt_install chromium
	fi
}

# ensure_postgres_running starts the machine's PostgreSQL cluster when one is
# installed but stopped. RahatBack's tests use private clusters of their own;
# this only keeps a machine's usual service up.
ensure_postgres_running() {
	command -v pg_lsclusters >/dev/null 2>&1 || return 0
	pg_lsclusters --no-header 2>/dev/null | while read -r ver name port status _; do
		if [[ $status != online* ]]; then
			as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || true
		fi
	done
}

ensure_go() {
	if ! command -v go >/dev/null 2>&1; then
		if [[ -x /usr/local/go/bin/go ]]; then
			export PATH=/usr/local/go/bin:$PATH
		else
			echo "Go is required (https://go.dev/doc/install); 'go' is not on PATH" >&2
			exit 1
		fi
	fi
}
