#!/usr/bin/env bash
# Debian packages juicer needs on the machine itself: the Fashion-MNIST demo data, Chromium for the
# browser test, and PostgreSQL's server binaries for the tests marked `postgres` (they run a throwaway
# cluster of their own; the package's default cluster is not used). Installs only what is missing, so a
# second run costs a dpkg query.
set -euo pipefail
need=()
for pkg in dataset-fashion-mnist chromium postgresql; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "Installing Debian packages: ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
