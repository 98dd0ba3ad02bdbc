# Sourced by run.sh and test.sh: installs the Debian packages kvdb needs that are missing.
KV_DEB_PACKAGES="gcc make cmake pkg-config libleveldb-dev libprotobuf-c-dev protobuf-c-compiler
libzstd-dev libev-dev libcmocka-dev clang libclang-rt-14-dev"

kv_install_deps() {
    local missing=""
    for p in $KV_DEB_PACKAGES; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "installing Debian packages:$missing"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    $sudo apt-get install -y -qq --no-install-recommends $missing
}
