# Shared by the scripts in this folder; source it after defining `say` and `die`.
# apt_install PKG...: installs the Debian packages that are missing, quietly (output only if it
# fails); MCPPORT_NO_INSTALL=1 makes a missing package an error instead.

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# apt_install PKG...: installs the packages that are missing; silent when none is.
apt_install() {
    local missing=() p sudo=()
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ ${MCPPORT_NO_INSTALL:-0} == 1 ]] && die "missing Debian packages: ${missing[*]} (MCPPORT_NO_INSTALL=1)"
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "missing packages ${missing[*]}: run as root or install sudo"
        sudo=(sudo)
    fi
    say "installing ${missing[*]}"
    # Output only if it fails (apt-get -qq still prints debconf notices).
    local out
    if ! out="$("${sudo[@]}" apt-get -qq -o DPkg::Lock::Timeout=300 update 2>&1 &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -y -o DPkg::Lock::Timeout=300 \
            install --no-install-recommends "${missing[@]}" 2>&1)"; then
        printf '%s\n' "$out" >&2
        echo "apt-get install ${missing[*]} failed" >&2
        exit 1
    fi
}
