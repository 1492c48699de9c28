// SPDX-License-Identifier: MIT
/*
 * The port I/O and MMIO registries: address ranges mapped to device
 * handlers.  Lookups take a read lock (vCPU threads run concurrently);
 * registration (BAR programming) takes the write lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/machine.h"

int vmm_io_bus_init(struct vmm_io_bus *bus)
{
	memset(bus, 0, sizeof(*bus));
	if (pthread_rwlock_init(&bus->lock, NULL))
		return -ENOMEM;
	return 0;
}

void vmm_io_bus_destroy(struct vmm_io_bus *bus)
{
	free(bus->ranges);
	bus->ranges = NULL;
	bus->count = 0;
	pthread_rwlock_destroy(&bus->lock);
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

int vmm_io_bus_add(struct vmm_io_bus *bus, uint64_t base, uint64_t len,
		   vmm_io_fn fn, void *opaque)
{
	int ret = 0;

	if (!len || base + len < base || !fn)
		return -EINVAL;
	pthread_rwlock_wrlock(&bus->lock);
	for (size_t i = 0; i < bus->count; i++) {
		if (ranges_overlap(base, len, bus->ranges[i].base,
				   bus->ranges[i].len)) {
			ret = -EBUSY;
			goto out;
		}
	}
	if (bus->count == bus->capacity) {
		size_t capacity = bus->capacity ? bus->capacity * 2 : 16;
		struct vmm_io_range *grown =
			realloc(bus->ranges, capacity * sizeof(*grown));

		if (!grown) {
			ret = -ENOMEM;
			goto out;
		}
		bus->ranges = grown;
		bus->capacity = capacity;
	}
	bus->ranges[bus->count++] = (struct vmm_io_range){
		.base = base, .len = len, .fn = fn, .opaque = opaque
	};
out:
	pthread_rwlock_unlock(&bus->lock);
	return ret;
}

void vmm_io_bus_remove(struct vmm_io_bus *bus, uint64_t base, void *opaque)
{
	pthread_rwlock_wrlock(&bus->lock);
	for (size_t i = 0; i < bus->count; i++) {
		if (bus->ranges[i].base == base &&
		    bus->ranges[i].opaque == opaque) {
			bus->ranges[i] = bus->ranges[--bus->count];
			break;
		}
	}
	pthread_rwlock_unlock(&bus->lock);
}

bool vmm_io_bus_access(struct vmm_io_bus *bus, uint64_t addr, void *data,
		       unsigned size, bool is_write)
{
	struct vmm_io_range range;
	bool found = false;

	pthread_rwlock_rdlock(&bus->lock);
	for (size_t i = 0; i < bus->count; i++) {
		const struct vmm_io_range *r = &bus->ranges[i];

		if (addr >= r->base && addr - r->base < r->len) {
			range = *r;
			found = true;
			break;
		}
	}
	pthread_rwlock_unlock(&bus->lock);
	if (!found) {
		if (!is_write)
			memset(data, 0xff, size);
		return false;
	}
	/* The handler runs unlocked: it may remap BARs itself. */
	range.fn(range.opaque, addr - range.base, data, size, is_write);
	return true;
}

int vmm_register_pio(struct vmm *vm, uint16_t base, uint16_t len, vmm_io_fn fn,
		     void *opaque)
{
	if ((uint32_t)base + len > 0x10000)
		return -EINVAL;
	return vmm_io_bus_add(&vm->pio, base, len, fn, opaque);
}

int vmm_register_mmio(struct vmm *vm, uint64_t base, uint64_t len, vmm_io_fn fn,
		      void *opaque)
{
	return vmm_io_bus_add(&vm->mmio, base, len, fn, opaque);
}

void vmm_unregister_pio(struct vmm *vm, uint16_t base, void *opaque)
{
	vmm_io_bus_remove(&vm->pio, base, opaque);
}

void vmm_unregister_mmio(struct vmm *vm, uint64_t base, void *opaque)
{
	vmm_io_bus_remove(&vm->mmio, base, opaque);
}
