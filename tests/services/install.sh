#!/usr/bin/env bash
# The one place that installs the system packages behind the tests' real services; the tests only
# detect them and skip, naming this script, where one is missing:
#   postgresql        a PostgreSQL cluster under an MLflow server  (tests/test_postgres_server.py)
#   slurm-wlm, munge  a one-node SLURM cluster                     (tests/test_slurm.py)
#   chromium          the MLflow UI screenshots                    (tests/test_ui_screenshots.py)
#
#   bash tests/services/install.sh [postgresql] [slurm] [chromium]    (no argument: all three)
#
# Idempotent: what is present is left alone, and `apt-get update` runs once, only when something is
# missing. Without root or apt-get it installs nothing, says what is missing and exits 0 (those tests
# then skip). Exits 1 when apt-get ran and something is still missing. .ci/run calls it.
# Presence is checked where the helpers in tests/services/*.py look: PATH, /usr/sbin and /sbin for
# SLURM (slurm.py COMMANDS), PATH and /usr/lib/postgresql/*/bin for PostgreSQL (postgres.py pg_bin),
# PATH for Chromium (lib/screenshots.py CHROMIUM_NAMES).
set -euo pipefail

SLURM_COMMANDS=(munged slurmctld slurmd sbatch squeue scancel sinfo scontrol)
CHROMIUM_NAMES=(chromium chromium-browser google-chrome)

say() { echo "tests/services/install.sh: $*"; }
joined() {
    local IFS=,
    echo "$*"
}

missing_postgresql() {
    local name
    for name in initdb pg_ctl; do
        command -v "$name" > /dev/null || compgen -G "/usr/lib/postgresql/*/bin/$name" > /dev/null || echo "$name"
    done
    getent passwd postgres > /dev/null 2>&1 || echo "the postgres user"
}

missing_slurm() {
    local name
    for name in "${SLURM_COMMANDS[@]}"; do
        command -v "$name" > /dev/null || [ -x "/usr/sbin/$name" ] || [ -x "/sbin/$name" ] || echo "$name"
    done
}

missing_chromium() {
    local name
    for name in "${CHROMIUM_NAMES[@]}"; do
        command -v "$name" > /dev/null && return 0
    done
    echo chromium
}

packages_of() {
    case "$1" in
        postgresql) echo postgresql ;;
        slurm) echo slurm-wlm munge ;;
        chromium) echo chromium ;;
    esac
}

services=("$@")
[ ${#services[@]} -gt 0 ] || services=(postgresql slurm chromium)
packages=()
missing=()
for service in "${services[@]}"; do
    case "$service" in
        postgresql | slurm | chromium) ;;
        *)
            echo "tests/services/install.sh: unknown service '$service' (postgresql, slurm, chromium)" >&2
            exit 2
            ;;
    esac
    mapfile -t lacking < <("missing_$service")
    if [ ${#lacking[@]} -gt 0 ]; then
        missing+=("$service ($(joined "${lacking[@]}"))")
        read -ra wanted <<< "$(packages_of "$service")"
        packages+=("${wanted[@]}")
    fi
done

if [ ${#packages[@]} -eq 0 ]; then
    say "${services[*]}: all present, nothing to install"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "not root: installed nothing; missing: ${missing[*]}; as root: bash tests/services/install.sh"
    exit 0
fi
if ! command -v apt-get > /dev/null; then
    say "no apt-get: installed nothing; missing: ${missing[*]} (Debian packages: ${packages[*]})"
    exit 0
fi

say "installing ${packages[*]} (missing: ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${packages[@]}" > /dev/null
# The postgresql package creates the postgres user; an installation that lost it gets it back.
if [[ " ${packages[*]} " == *" postgresql "* ]] && ! getent passwd postgres > /dev/null; then
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

still=()
for service in "${services[@]}"; do
    mapfile -t lacking < <("missing_$service")
    [ ${#lacking[@]} -eq 0 ] || still+=("$service ($(joined "${lacking[@]}"))")
done
if [ ${#still[@]} -gt 0 ]; then
    say "apt-get installed ${packages[*]} but still missing: ${still[*]}" >&2
    exit 1
fi
say "installed ${packages[*]}"
