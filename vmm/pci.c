// SPDX-License-Identifier: MIT
/*
 * PCI bus 0: configuration mechanism #1 (0xCF8 address, 0xCFC-0xCFF data;
 * PCI Local Bus 3.0 section 3.2.2.3.2), BAR sizing and decoding, INTx
 * routing through the PIIX3 PIRQ route registers, MSI delivery.
 *
 * The byte at 0xCF9 is the PIIX3 reset control register; it shares the
 * 0xCF8 dword, so it is decoded here too.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/machine.h"

#define PCI_SLOTS 32
#define PCI_FUNCTIONS 8

#define PCI_COMMAND 0x04
#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS 0x06
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_STATUS_INTERRUPT 0x08
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_ROM_ADDRESS 0x30
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d
#define PCI_BAR_IO 0x1
#define PCI_BAR_MEM_TYPE_64 0x4
#define PIIX3_PIRQ_ROUTE 0x60
#define PIIX3_PIRQ_DISABLED 0x80
/* Reset control register (PIIX3 datasheet 2.1.4): bit 2 starts the reset,
 * bit 1 asks for a hard reset. */
#define PIIX_RCR_RESET_CPU 0x04

struct pci_bus {
	struct vmm *vm;
	pthread_mutex_t lock;
	uint32_t config_address;
	uint8_t reset_control;
	struct pci_device *functions[PCI_SLOTS * PCI_FUNCTIONS];
	/* INTx: the GSI each function asserts now (-1: none) and how many
	 * functions hold each GSI high (lines are shared, level-triggered) */
	int intx_gsi[PCI_SLOTS * PCI_FUNCTIONS];
	unsigned gsi_holders[VMM_NUM_GSI];
	struct pci_device *pirq_router;
};

static uint32_t load_le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store_le32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static uint16_t load_le16(const uint8_t *p)
{
	return p[0] | p[1] << 8;
}

/* ---- BARs --------------------------------------------------------------*/

static bool bar_is_64bit_low(const struct pci_device *dev, unsigned bar)
{
	return !dev->bar_is_io[bar] && dev->bar_size[bar] &&
	       bar + 1 < PCI_NUM_BARS &&
	       (dev->config[PCI_BAR0 + 4 * bar] & 0x6) == PCI_BAR_MEM_TYPE_64;
}

static uint64_t bar_address(const struct pci_device *dev, unsigned bar)
{
	uint64_t addr = load_le32(&dev->config[PCI_BAR0 + 4 * bar]);

	if (dev->bar_is_io[bar])
		return addr & ~3ull & 0xffff;
	addr &= ~0xfull;
	if (bar_is_64bit_low(dev, bar))
		addr |= (uint64_t)load_le32(
				&dev->config[PCI_BAR0 + 4 * bar + 4])
			<< 32;
	return addr;
}

static void pci_unmap_bar(struct pci_device *dev, unsigned bar)
{
	if (!dev->bar_mapped[bar])
		return;
	if (dev->bar_is_io[bar])
		vmm_unregister_pio(dev->vm, dev->bar_addr[bar], dev->opaque);
	else
		vmm_unregister_mmio(dev->vm, dev->bar_addr[bar], dev->opaque);
	dev->bar_mapped[bar] = false;
	if (!dev->bar_is_io[bar] && dev->bar_moved)
		dev->bar_moved(dev, bar, dev->bar_addr[bar], false);
}

/* Decode what the command register and the BARs say now. */
static void pci_update_bars(struct pci_device *dev)
{
	uint16_t command = load_le16(&dev->config[PCI_COMMAND]);

	for (unsigned bar = 0; bar < PCI_NUM_BARS; bar++) {
		uint64_t size = dev->bar_size[bar];
		bool enabled = dev->bar_is_io[bar]
				       ? command & PCI_COMMAND_IO
				       : command & PCI_COMMAND_MEMORY;
		uint64_t addr;
		bool valid;

		if (!size || !dev->bar_io[bar])
			continue;
		addr = bar_address(dev, bar);
		/* An unprogrammed BAR, or one still holding the sizing
		 * pattern, decodes nothing; neither does one over RAM. */
		if (dev->bar_is_io[bar])
			valid = addr && addr + size <= 0x10000;
		else
			valid = (addr >= dev->vm->low_ram &&
				 addr + size <= 0xfec00000ull) ||
				(addr >= VMM_4GIB + dev->vm->high_ram &&
				 addr + size <= (1ull << 48));
		if (dev->bar_mapped[bar] &&
		    (!enabled || !valid || dev->bar_addr[bar] != addr))
			pci_unmap_bar(dev, bar);
		if (enabled && valid && !dev->bar_mapped[bar]) {
			int ret;

			if (dev->bar_is_io[bar])
				ret = vmm_register_pio(dev->vm, addr, size,
						       dev->bar_io[bar],
						       dev->opaque);
			else
				ret = vmm_register_mmio(dev->vm, addr, size,
							dev->bar_io[bar],
							dev->opaque);
			if (ret == 0) {
				dev->bar_addr[bar] = addr;
				dev->bar_mapped[bar] = true;
				if (!dev->bar_is_io[bar] && dev->bar_moved)
					dev->bar_moved(dev, bar, addr, true);
			}
		}
	}
}

/* A BAR dword after the guest wrote value: only the address bits above
 * the size stick; the type bits are the device's. */
static uint32_t bar_masked_value(const struct pci_device *dev, unsigned bar,
				 uint32_t value)
{
	uint64_t size = dev->bar_size[bar];
	uint32_t type;

	if (!size) {
		/* the high dword of a 64-bit BAR takes every bit its size
		 * allows */
		if (bar > 0 && bar_is_64bit_low(dev, bar - 1)) {
			uint64_t low_size = dev->bar_size[bar - 1];

			return low_size >> 32
				       ? value & ~(uint32_t)((low_size >> 32) -
							     1)
				       : value;
		}
		return 0;
	}
	type = dev->config[PCI_BAR0 + 4 * bar] &
	       (dev->bar_is_io[bar] ? 0x3 : 0xf);
	return (value & ~(uint32_t)(size - 1) &
		(dev->bar_is_io[bar] ? ~3u : ~0xfu)) |
	       type;
}

/* ---- config space access -----------------------------------------------*/

static bool pci_config_byte_writable(const struct pci_device *dev, unsigned off)
{
	switch (off) {
	case PCI_COMMAND:
	case PCI_COMMAND + 1:
	case 0x0c: /* cache line size */
	case 0x0d: /* latency timer */
	case PCI_INTERRUPT_LINE:
		return true;
	}
	if (off < 0x40)
		return false;
	/* capability IDs and next pointers are read-only */
	if (dev->config[PCI_STATUS] & PCI_STATUS_CAP_LIST) {
		unsigned cap = dev->config[PCI_CAPABILITY_LIST] & 0xfc;

		for (unsigned n = 0; cap >= 0x40 && n < 48; n++) {
			if (off == cap || off == cap + 1)
				return false;
			cap = dev->config[cap + 1] & 0xfc;
		}
	}
	return true;
}

static void pci_config_write(struct pci_device *dev, unsigned off,
			     const uint8_t *data, unsigned size)
{
	bool bars_touched = false;

	for (unsigned i = 0; i < size; i++) {
		unsigned at = off + i;

		if (at >= PCI_BAR0 && at < PCI_BAR0 + 4 * PCI_NUM_BARS) {
			unsigned bar = (at - PCI_BAR0) / 4;
			uint8_t dword[4];

			memcpy(dword, &dev->config[PCI_BAR0 + 4 * bar], 4);
			dword[at & 3] = data[i];
			store_le32(&dev->config[PCI_BAR0 + 4 * bar],
				   bar_masked_value(dev, bar,
						    load_le32(dword)));
			bars_touched = true;
		} else if (at == PCI_STATUS + 1) {
			/* error bits are write-one-to-clear */
			dev->config[at] &= ~data[i];
		} else if (pci_config_byte_writable(dev, at)) {
			if (at == PCI_COMMAND + 1)
				/* only interrupt disable and fast b2b */
				dev->config[at] = data[i] & 0x07;
			else
				dev->config[at] = data[i];
			if (at <= PCI_COMMAND + 1)
				bars_touched = true;
		}
	}
	if (bars_touched)
		pci_update_bars(dev);
}

void pci_config_access(struct vmm *vm, unsigned devfn, unsigned off, void *data,
		       unsigned size, bool is_write)
{
	struct pci_bus *bus = vm->pci;
	struct pci_device *dev;

	if (devfn >= PCI_SLOTS * PCI_FUNCTIONS || off >= 256 ||
	    off + size > 256 || !size) {
		if (!is_write)
			memset(data, 0xff, size);
		return;
	}
	pthread_mutex_lock(&bus->lock);
	dev = bus->functions[devfn];
	if (!dev) {
		if (!is_write)
			memset(data, 0xff, size);
	} else if (is_write) {
		pci_config_write(dev, off, data, size);
	} else {
		memcpy(data, &dev->config[off], size);
	}
	pthread_mutex_unlock(&bus->lock);
	/* The hook runs unlocked: it may take the device's lock, and the
	 * device may raise INTx (the bus lock) under its own lock. */
	if (dev && is_write && dev->config_written)
		dev->config_written(dev, off, size);
}

static void pci_host_io(void *opaque, uint64_t addr, void *data, unsigned size,
			bool is_write)
{
	struct vmm *vm = opaque;
	struct pci_bus *bus = vm->pci;
	uint8_t *bytes = data;

	if (addr < 4) {
		if (addr == 0 && size == 4) {
			if (is_write)
				bus->config_address = load_le32(bytes) &
						      0x80fffffcu;
			else
				store_le32(bytes, bus->config_address);
		} else if (addr == 1 && size == 1) {
			if (!is_write) {
				bytes[0] = bus->reset_control;
			} else {
				bus->reset_control = bytes[0] & 0x02;
				if (bytes[0] & PIIX_RCR_RESET_CPU)
					vmm_request_reset(vm);
			}
		} else if (!is_write) {
			memset(data, 0xff, size);
		}
		return;
	}
	/* 0xCFC-0xCFF: data window of the addressed register */
	{
		uint32_t address = bus->config_address;
		unsigned bus_number = (address >> 16) & 0xff;
		unsigned devfn = (address >> 8) & 0xff;
		unsigned off = (address & 0xfc) + (unsigned)(addr - 4);

		if (!(address & 0x80000000u) || bus_number != 0 ||
		    off + size > 256) {
			if (!is_write)
				memset(data, 0xff, size);
			return;
		}
		pci_config_access(vm, devfn, off, data, size, is_write);
	}
}

static void pci_bus_reset(void *opaque)
{
	struct vmm *vm = opaque;
	struct pci_bus *bus = vm->pci;

	pthread_mutex_lock(&bus->lock);
	bus->config_address = 0;
	bus->reset_control = 0;
	for (unsigned i = 0; i < PCI_SLOTS * PCI_FUNCTIONS; i++) {
		struct pci_device *dev = bus->functions[i];

		if (!dev)
			continue;
		/* decoding off, BARs unprogrammed, as at power-on */
		dev->config[PCI_COMMAND] = 0;
		dev->config[PCI_COMMAND + 1] = 0;
		for (unsigned bar = 0; bar < PCI_NUM_BARS; bar++) {
			uint32_t type = 0;

			if (dev->bar_size[bar])
				type = dev->config[PCI_BAR0 + 4 * bar] &
				       (dev->bar_is_io[bar] ? 0x3 : 0xf);
			store_le32(&dev->config[PCI_BAR0 + 4 * bar], type);
		}
		pci_update_bars(dev);
		dev->config[PCI_INTERRUPT_LINE] = 0;
	}
	for (unsigned i = 0; i < PCI_SLOTS * PCI_FUNCTIONS; i++)
		bus->intx_gsi[i] = -1;
	memset(bus->gsi_holders, 0, sizeof(bus->gsi_holders));
	pthread_mutex_unlock(&bus->lock);
}

int pci_bus_create(struct vmm *vm)
{
	struct pci_bus *bus = calloc(1, sizeof(*bus));
	int ret;

	if (!bus)
		return -ENOMEM;
	bus->vm = vm;
	pthread_mutex_init(&bus->lock, NULL);
	for (unsigned i = 0; i < PCI_SLOTS * PCI_FUNCTIONS; i++)
		bus->intx_gsi[i] = -1;
	vm->pci = bus;
	ret = vmm_register_pio(vm, 0xcf8, 8, pci_host_io, vm);
	if (ret)
		return ret;
	vmm_on_reset(vm, pci_bus_reset, vm);
	return 0;
}

void pci_bus_destroy(struct vmm *vm)
{
	if (!vm->pci)
		return;
	pthread_mutex_destroy(&vm->pci->lock);
	free(vm->pci);
	vm->pci = NULL;
}

int pci_register_function(struct vmm *vm, struct pci_device *dev, unsigned slot,
			  unsigned function)
{
	struct pci_bus *bus = vm->pci;
	unsigned devfn = slot << 3 | function;

	if (slot >= PCI_SLOTS || function >= PCI_FUNCTIONS)
		return -EINVAL;
	pthread_mutex_lock(&bus->lock);
	if (bus->functions[devfn]) {
		pthread_mutex_unlock(&bus->lock);
		return -EBUSY;
	}
	dev->vm = vm;
	dev->devfn = devfn;
	for (unsigned bar = 0; bar < PCI_NUM_BARS; bar++) {
		uint64_t size = dev->bar_size[bar];

		dev->bar_mapped[bar] = false;
		dev->bar_addr[bar] = 0;
		/* BAR sizes are powers of two; I/O BARs at least 4 bytes,
		 * memory BARs at least 16 */
		if (size && ((size & (size - 1)) ||
			     size < (dev->bar_is_io[bar] ? 4u : 16u))) {
			pthread_mutex_unlock(&bus->lock);
			return -EINVAL;
		}
		if (size && dev->bar_is_io[bar])
			dev->config[PCI_BAR0 + 4 * bar] |= PCI_BAR_IO;
	}
	dev->gsi = 0;
	if (dev->config[PCI_INTERRUPT_PIN] >= 1 &&
	    dev->config[PCI_INTERRUPT_PIN] <= 4)
		/* SeaBIOS's PIIX routing: PIRQA-D -> 10, 10, 11, 11 */
		dev->gsi = ((slot + dev->config[PCI_INTERRUPT_PIN] - 2) & 3) < 2
				   ? 10
				   : 11;
	bus->functions[devfn] = dev;
	pthread_mutex_unlock(&bus->lock);
	return 0;
}

int pci_register_device(struct vmm *vm, struct pci_device *dev, unsigned slot)
{
	return pci_register_function(vm, dev, slot, 0);
}

void pci_set_pirq_router(struct vmm *vm, struct pci_device *isa_bridge)
{
	vm->pci->pirq_router = isa_bridge;
}

/* ---- interrupts --------------------------------------------------------*/

static int pci_intx_route(struct pci_bus *bus, struct pci_device *dev)
{
	unsigned pin = dev->config[PCI_INTERRUPT_PIN];
	unsigned pirq;
	uint8_t route;

	if (pin < 1 || pin > 4)
		return -1;
	pirq = ((dev->devfn >> 3) + pin - 1) & 3;
	if (!bus->pirq_router)
		return dev->gsi;
	route = bus->pirq_router->config[PIIX3_PIRQ_ROUTE + pirq];
	if (route & PIIX3_PIRQ_DISABLED || route >= 16 || route < 3)
		return -1;
	return route;
}

void pci_set_intx(struct pci_device *dev, bool level)
{
	struct vmm *vm = dev->vm;
	struct pci_bus *bus = vm->pci;
	int old_gsi, new_gsi = -1;

	pthread_mutex_lock(&bus->lock);
	if (level) {
		dev->config[PCI_STATUS] |= PCI_STATUS_INTERRUPT;
		if (!(load_le16(&dev->config[PCI_COMMAND]) &
		      PCI_COMMAND_INTX_DISABLE))
			new_gsi = pci_intx_route(bus, dev);
	} else {
		dev->config[PCI_STATUS] &= ~PCI_STATUS_INTERRUPT;
	}
	old_gsi = bus->intx_gsi[dev->devfn];
	if (old_gsi != new_gsi) {
		if (old_gsi >= 0 && --bus->gsi_holders[old_gsi] == 0)
			vmm_set_irq(vm, old_gsi, false);
		if (new_gsi >= 0 && bus->gsi_holders[new_gsi]++ == 0)
			vmm_set_irq(vm, new_gsi, true);
		bus->intx_gsi[dev->devfn] = new_gsi;
		if (new_gsi >= 0)
			dev->gsi = new_gsi;
	}
	pthread_mutex_unlock(&bus->lock);
}

bool pci_msi_notify(struct pci_device *dev, unsigned cap_off)
{
	uint16_t control;
	uint64_t address;
	uint16_t data;

	if (cap_off < 0x40 || cap_off > 256 - 14)
		return false;
	control = load_le16(&dev->config[cap_off + 2]);
	if (!(control & 0x1))
		return false;
	address = load_le32(&dev->config[cap_off + 4]);
	if (control & 0x80) { /* 64-bit address */
		address |= (uint64_t)load_le32(&dev->config[cap_off + 8]) << 32;
		data = load_le16(&dev->config[cap_off + 12]);
	} else {
		data = load_le16(&dev->config[cap_off + 8]);
	}
	vmm_send_msi(dev->vm, address, data);
	return true;
}
