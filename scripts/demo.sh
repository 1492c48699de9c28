#!/bin/bash
# make demo: the storage side end to end, then the VMM when it is built.
set -u
cd "$(dirname "$0")/.."
export B=${B:-build}
rc=0
scripts/demo-storage.sh || rc=1
if [ -x scripts/demo-vmm.sh ] || [ -f scripts/demo-vmm.sh ]; then
	echo
	bash scripts/demo-vmm.sh || rc=1
fi
exit $rc
