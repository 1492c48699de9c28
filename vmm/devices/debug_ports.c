// SPDX-License-Identifier: MIT
/*
 * Port 0x80 (POST codes: accepted and dropped, it is also the classic I/O
 * delay port) and the Bochs/QEMU debug console at 0x402: SeaBIOS checks
 * that a read returns 0xE9 and then writes its log there.  Without a log
 * file the port reads as absent, so the firmware does not spend an exit
 * per log byte.
 */
#include <stdlib.h>
#include <string.h>

#include "vmm/machine.h"

#define POST_PORT 0x80
#define DEBUGCON_PORT 0x402
#define DEBUGCON_PRESENT 0xe9

struct debug_ports {
	struct outbuf *log;
	uint8_t last_post_code;
};

static void post_io(void *opaque, uint64_t addr, void *data, unsigned size,
		    bool is_write)
{
	struct debug_ports *dp = opaque;

	(void)addr;
	if (is_write)
		dp->last_post_code = *(uint8_t *)data;
	else
		memset(data, dp->last_post_code, size);
}

static void debugcon_io(void *opaque, uint64_t addr, void *data, unsigned size,
			bool is_write)
{
	struct debug_ports *dp = opaque;

	(void)addr;
	if (!is_write) {
		memset(data, dp->log ? DEBUGCON_PRESENT : 0xff, size);
		return;
	}
	if (dp->log)
		outbuf_put(dp->log, data, 1);
}

struct debug_ports *debug_ports_create(struct vmm *vm, struct outbuf *log)
{
	struct debug_ports *dp = calloc(1, sizeof(*dp));

	if (!dp)
		return NULL;
	dp->log = log;
	if (vmm_register_pio(vm, POST_PORT, 1, post_io, dp) ||
	    vmm_register_pio(vm, DEBUGCON_PORT, 1, debugcon_io, dp)) {
		free(dp);
		return NULL;
	}
	return dp;
}

void debug_ports_destroy(struct debug_ports *dp)
{
	free(dp);
}
