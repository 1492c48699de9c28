// SPDX-License-Identifier: MIT
/*
 * Port 0x80 (POST codes: accepted and dropped, it is also the classic I/O
 * delay port) and the Bochs/QEMU debug console at 0x402: SeaBIOS checks
 * that a read returns 0xE9 and then writes its log there.  Without a log
 * file the port reads as absent, so the firmware does not spend an exit
 * per log byte.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/machine.h"

#define POST_PORT 0x80
#define DEBUGCON_PORT 0x402
#define DEBUGCON_PRESENT 0xe9

struct debug_ports {
	int log_fd;
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
		memset(data, dp->log_fd >= 0 ? DEBUGCON_PRESENT : 0xff, size);
		return;
	}
	if (dp->log_fd >= 0)
		while (write(dp->log_fd, data, 1) < 0 && errno == EINTR)
			;
}

struct debug_ports *debug_ports_create(struct vmm *vm, int log_fd)
{
	struct debug_ports *dp = calloc(1, sizeof(*dp));

	if (!dp)
		return NULL;
	dp->log_fd = log_fd;
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
