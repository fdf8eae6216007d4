#!/usr/bin/env bash
# Runs one Apache Kafka node (KRaft: broker and controller) on loopback, in the foreground, with
# its data in DIR: formats DIR the first time, reuses it afterwards (a restart keeps the topics,
# as a real broker's does). The jars come from integration/test.sh (Maven Central, cached).
# Usage: integration/kafka/broker.sh DIR PORT CONTROLLER_PORT
set -euo pipefail
dir=${1:?data directory}; port=${2:?port}; controller=${3:?controller port}
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
libs="${KAUDIT_KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/kaudit/kafka-$version}"
if ! ls "$libs"/kafka_2.13-*.jar >/dev/null 2>&1; then
  echo "broker.sh: Apache Kafka's jars are not in $libs: run ./integration/test.sh (it fetches them), or" \
    "mvn -f $here/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$libs" >&2
  exit 2
fi
command -v java >/dev/null || { echo "broker.sh: java is not installed (apt-get install openjdk-17-jre-headless)" >&2; exit 2; }
mkdir -p "$dir"
cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.quorum.voters=1@127.0.0.1:$controller
log.dirs=$dir/logs
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.partitions=6
PROPS
if [ ! -f "$dir/logs/meta.properties" ]; then
  java -cp "$libs/*" kafka.tools.StorageTool format -t a2F1ZGl0LXRlc3RzLWsxAA -c "$dir/server.properties" >/dev/null
fi
exec java -Xms256m -Xmx1g -XX:+UseSerialGC -cp "$libs/*" kafka.Kafka "$dir/server.properties"
