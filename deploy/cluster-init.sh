#!/bin/sh
# Creates the Redis Cluster of the compose "cluster" profile from the nodes
# in CLUSTER_NODES ("host:port host:port ..."), then waits until every node
# reports cluster_state:ok, so that the services started after this one find
# a cluster that serves every slot.
#
# It runs at every "docker compose up": a cluster whose slots are already
# all assigned is left alone, because "redis-cli --cluster create" refuses
# nodes that hold slots or know other nodes.
set -eu

: "${CLUSTER_NODES:?names the cluster nodes, host:port separated by spaces}"
tries=${CLUSTER_INIT_TRIES:-60}

# cli HOST:PORT ARG...
cli() {
	addr=$1
	shift
	redis-cli -h "${addr%:*}" -p "${addr##*:}" "$@"
}

# wait_for HOST:PORT PATTERN ARG...: bounded, so that a cluster that never
# forms fails this service, and with it the start of the app servers, rather
# than keeping them waiting for ever.
wait_for() {
	node=$1
	pattern=$2
	shift 2
	n=0
	until cli "$node" "$@" 2>/dev/null | grep -q "$pattern"; do
		n=$((n + 1))
		if [ "$n" -ge "$tries" ]; then
			echo "cluster-init: $node did not answer \"$*\" with $pattern in time" >&2
			return 1
		fi
		sleep 1
	done
}

for node in $CLUSTER_NODES; do
	wait_for "$node" PONG ping
done

# shellcheck disable=SC2086 # one word per node is wanted
set -- $CLUSTER_NODES
if cli "$1" cluster info | grep -q '^cluster_slots_assigned:16384'; then
	echo "cluster-init: every slot is already assigned; not creating the cluster again"
else
	redis-cli --cluster create "$@" --cluster-replicas 1 --cluster-yes
fi

for node in $CLUSTER_NODES; do
	wait_for "$node" '^cluster_state:ok' cluster info
done
echo "cluster-init: cluster_state:ok on every node"
