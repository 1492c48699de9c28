/* SPDX-License-Identifier: MIT */
/* Shared by the tests/unit/test_vmm_*.c files: port and MMIO accesses on a
 * machine without KVM (vmm_create_test), as a vCPU would make them. */
#ifndef VMM_TEST_UTIL_H
#define VMM_TEST_UTIL_H

#include <string.h>

#include "vmm/machine.h"

static inline void pio_write(struct vmm *vm, uint16_t port, uint32_t value,
			     unsigned size)
{
	uint8_t data[4];

	memcpy(data, &value, 4);
	vmm_io_bus_access(&vm->pio, port, data, size, true);
}

static inline uint32_t pio_read(struct vmm *vm, uint16_t port, unsigned size)
{
	uint32_t value = 0;

	vmm_io_bus_access(&vm->pio, port, &value, size, false);
	return value;
}

static inline void outb(struct vmm *vm, uint16_t port, uint8_t value)
{
	pio_write(vm, port, value, 1);
}

static inline uint8_t inb(struct vmm *vm, uint16_t port)
{
	return pio_read(vm, port, 1);
}

static inline uint32_t pci_read32(struct vmm *vm, unsigned devfn, unsigned off)
{
	pio_write(vm, 0xcf8, 0x80000000u | devfn << 8 | (off & 0xfc), 4);
	return pio_read(vm, 0xcfc, 4);
}

static inline void pci_write32(struct vmm *vm, unsigned devfn, unsigned off,
			       uint32_t value)
{
	pio_write(vm, 0xcf8, 0x80000000u | devfn << 8 | (off & 0xfc), 4);
	pio_write(vm, 0xcfc, value, 4);
}

static inline void pci_write8(struct vmm *vm, unsigned devfn, unsigned off,
			      uint8_t value)
{
	pio_write(vm, 0xcf8, 0x80000000u | devfn << 8 | (off & 0xfc), 4);
	pio_write(vm, 0xcfc + (off & 3), value, 1);
}

#endif
