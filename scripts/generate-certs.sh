#!/usr/bin/env bash
# Makes a private CA, a server certificate for the gateway and a client certificate for edges
# (mTLS), the workflow of the original mcpport's README, with openssl.
#
#   scripts/generate-certs.sh --domain gateway.example.com [--ip 203.0.113.7] [--out certs]
#                             [--days 825] [--key ec|rsa|rsa-pkcs1|ec-sec1] [--expired]
#                             [--client NAME]...
#
# Writes into --out (default certs/): ca.crt ca.key, server.crt (server + CA chain) server.key,
# client.crt (client + CA chain) client.key. The server certificate names --domain, localhost,
# 127.0.0.1 and ::1 (plus --ip). Keys are PKCS#8 PEM (ec: P-256, rsa: 2048 bits), PKCS#1
# ("BEGIN RSA PRIVATE KEY", rsa-pkcs1) or SEC1 ("BEGIN EC PRIVATE KEY", ec-sec1). Existing files
# in --out are replaced. --expired makes the server certificate one that expired in 2020, for
# checking that peers refuse it. Each --client NAME adds NAME.crt and NAME.key, another client
# certificate from the same CA (edges with certificates of their own: on a gateway without
# tokens, a server's name belongs to the certificate that registered it).
set -euo pipefail

domain=localhost out=certs days=825 key=ec extra_ip="" expired=0 clients=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --domain) domain=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --days) days=$2; shift 2 ;;
        --key) key=$2; shift 2 ;;
        --ip) extra_ip=$2; shift 2 ;;
        --expired) expired=1; shift ;;
        --client) clients+=("$2"); shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "generate-certs: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done
command -v openssl >/dev/null || { echo "generate-certs: openssl is needed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"

new_key() { # FILE
    case $key in
        ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null ;;
        rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null ;;
        rsa-pkcs1) openssl genrsa -traditional -out "$1" 2048 2>/dev/null ;;
        ec-sec1) openssl ecparam -name prime256v1 -genkey -noout -out "$1" ;;
        *) echo "generate-certs: --key must be ec, rsa, rsa-pkcs1 or ec-sec1" >&2; exit 2 ;;
    esac
    chmod 600 "$1"
}

sign() { # NAME SUBJECT EXTENSIONS
    new_key "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%b' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -sha256 \
        -extfile "$1.ext" -out "$1.leaf.crt" 2>/dev/null
    cat "$1.leaf.crt" ca.crt >"$1.crt"
    rm -f "$1.csr" "$1.ext" "$1.leaf.crt"
}

new_key ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=mcpport private CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt

san="DNS:$domain,DNS:localhost,IP:127.0.0.1,IP:::1${extra_ip:+,IP:$extra_ip}"
sign server "/CN=$domain" "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=$san\n"
client_ext="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
sign client "/CN=mcpport-edge" "$client_ext"
for name in "${clients[@]}"; do
    [[ $name =~ ^[A-Za-z0-9_-]+$ && $name != ca && $name != server ]] || { echo "generate-certs: bad --client name $name" >&2; exit 2; }
    sign "$name" "/CN=$name" "$client_ext"
done
rm -f ca.srl

if [[ $expired == 1 ]]; then
    # `openssl ca` is the one openssl 3.0 tool that takes explicit validity dates.
    ca_dir=$(mktemp -d)
    touch "$ca_dir/index.txt"
    echo 1000 >"$ca_dir/serial"
    printf '%s\n' "[ca]" "default_ca=d" "[d]" "database=$ca_dir/index.txt" "new_certs_dir=$ca_dir" \
        "serial=$ca_dir/serial" "default_md=sha256" "policy=p" "copy_extensions=none" "[p]" "commonName=supplied" \
        "[v3]" "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" "subjectAltName=$san" >"$ca_dir/ca.cnf"
    openssl req -new -key server.key -subj "/CN=$domain" -out "$ca_dir/server.csr"
    openssl ca -batch -notext -config "$ca_dir/ca.cnf" -cert ca.crt -keyfile ca.key -extensions v3 \
        -startdate 20200101000000Z -enddate 20200102000000Z -in "$ca_dir/server.csr" -out "$ca_dir/server.crt" 2>/dev/null
    cat "$ca_dir/server.crt" ca.crt >server.crt
    rm -rf "$ca_dir"
fi

if [[ $expired == 1 ]]; then
    validity="the server certificate EXPIRED on 2020-01-02 (--expired); the CA and client ones $days days"
else
    validity="$days days"
fi
echo "generate-certs: wrote $(pwd)/{ca,server,client}.{crt,key} for $domain ($key keys, $validity)"
echo "  gateway:  mcpport gateway --ssl-enabled --ssl-certfile $out/server.crt --ssl-keyfile $out/server.key [--ssl-ca-certs $out/ca.crt]"
echo "  register: mcpport register --gateway-url wss://$domain:8765/mcp/register --ssl-ca-cert $out/ca.crt [--ssl-certfile $out/client.crt --ssl-keyfile $out/client.key] ..."
