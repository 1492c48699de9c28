/* SPDX-License-Identifier: MIT */
/* PCI configuration mechanism #1, BAR sizing and decoding, read-only
 * fields, INTx routing through the PIIX3 PIRQ registers, MSI; the PIIX4
 * power management block (ACPI enable, power-off, PM timer), the reset
 * paths (0xCF9, i8042) and hostile config accesses. */
#include <criterion/criterion.h>
#include <unistd.h>

#include "vmm_test_util.h"

#define TEST_SLOT 5
#define TEST_DEVFN (TEST_SLOT << 3)

static struct vmm *vm;
static struct piix *piix;
static struct pci_device dev;
static unsigned bar_hits;
static uint64_t bar_last_addr;

static void bar_io(void *opaque, uint64_t addr, void *data, unsigned size,
		   bool is_write)
{
	(void)opaque;
	bar_hits++;
	bar_last_addr = addr;
	if (!is_write)
		memset(data, 0x5a, size);
}

static void setup(void)
{
	vm = vmm_create_test(64u << 20);
	cr_assert_not_null(vm);
	piix = piix_create(vm);
	cr_assert_not_null(piix);
	memset(&dev, 0, sizeof(dev));
	dev.config[0] = 0x34;
	dev.config[1] = 0x12;
	dev.config[2] = 0x78;
	dev.config[3] = 0x56;
	dev.config[0x06] = 0x10; /* capability list */
	dev.config[0x34] = 0x80;
	dev.config[0x80] = 0x05; /* MSI, 64-bit */
	dev.config[0x82] = 0x80;
	dev.config[0x3d] = 1; /* INTA */
	dev.bar_size[0] = 32;
	dev.bar_is_io[0] = true;
	dev.bar_io[0] = bar_io;
	dev.bar_size[5] = 4096;
	dev.bar_io[5] = bar_io;
	bar_hits = 0;
	cr_assert_eq(pci_register_device(vm, &dev, TEST_SLOT), 0);
}

static void teardown(void)
{
	piix_destroy(piix);
	vmm_destroy(vm);
}

TestSuite(vmm_pci, .init = setup, .fini = teardown);

Test(vmm_pci, enumeration)
{
	cr_assert_eq(pci_read32(vm, 0, 0), 0x12378086, "i440FX");
	cr_assert_eq(pci_read32(vm, 1 << 3, 0), 0x70008086, "PIIX3");
	cr_assert_eq(pci_read32(vm, 1 << 3, 0x0c) >> 16 & 0x80, 0x80,
		     "multi-function");
	cr_assert_eq(pci_read32(vm, 1 << 3 | 3, 0), 0x71138086, "PIIX4 PM");
	cr_assert_eq(pci_read32(vm, 0, 0x2c), 0x11001af4, "QEMU subsystem");
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0), 0x56781234);
	cr_assert_eq(pci_read32(vm, 2 << 3, 0), 0xffffffff, "empty slot");
	/* bus 1 and a disabled address register read all ones */
	pio_write(vm, 0xcf8, 0x80010000, 4);
	cr_assert_eq(pio_read(vm, 0xcfc, 4), 0xffffffff);
	pio_write(vm, 0xcf8, 0x00000000, 4);
	cr_assert_eq(pio_read(vm, 0xcfc, 4), 0xffffffff);
	/* the address register reads back */
	pio_write(vm, 0xcf8, 0x80001804, 4);
	cr_assert_eq(pio_read(vm, 0xcf8, 4), 0x80001804);
	/* byte and word reads inside the dword */
	pio_write(vm, 0xcf8, 0x80000000 | TEST_DEVFN << 8, 4);
	cr_assert_eq(pio_read(vm, 0xcfe, 2), 0x5678);
	cr_assert_eq(pio_read(vm, 0xcfd, 1), 0x12);
}

Test(vmm_pci, bar_sizing_and_decoding)
{
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0x10) & 1, 1, "I/O BAR");
	pci_write32(vm, TEST_DEVFN, 0x10, 0xffffffff);
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0x10), 0xffffffe1);
	pci_write32(vm, TEST_DEVFN, 0x24, 0xffffffff);
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0x24), 0xfffff000);
	pci_write32(vm, TEST_DEVFN, 0x14, 0xffffffff);
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0x14), 0, "unused BAR");
	/* program, but decoding is still off */
	pci_write32(vm, TEST_DEVFN, 0x10, 0xc000);
	pci_write32(vm, TEST_DEVFN, 0x24, 0xfebf0000);
	cr_assert_eq(pio_read(vm, 0xc004, 1), 0xff);
	pci_write32(vm, TEST_DEVFN, 0x04, 0x3); /* I/O + memory */
	cr_assert_eq(pio_read(vm, 0xc004, 1), 0x5a);
	cr_assert_eq(bar_last_addr, 4);
	{
		uint32_t v = 0;

		cr_assert(
			vmm_io_bus_access(&vm->mmio, 0xfebf0010, &v, 4, false));
		cr_assert_eq(bar_last_addr, 0x10);
	}
	/* move the memory BAR: the old address no longer decodes */
	pci_write32(vm, TEST_DEVFN, 0x24, 0xfebe0000);
	{
		uint32_t v = 0;

		cr_assert_not(
			vmm_io_bus_access(&vm->mmio, 0xfebf0010, &v, 4, false));
		cr_assert(
			vmm_io_bus_access(&vm->mmio, 0xfebe0010, &v, 4, false));
	}
	/* a BAR over guest RAM is not decoded */
	pci_write32(vm, TEST_DEVFN, 0x24, 0x00100000);
	{
		uint32_t v = 0;

		cr_assert_not(
			vmm_io_bus_access(&vm->mmio, 0x00100000, &v, 4, false));
	}
	/* decoding off unmaps */
	pci_write32(vm, TEST_DEVFN, 0x04, 0);
	cr_assert_eq(pio_read(vm, 0xc004, 1), 0xff);
}

Test(vmm_pci, read_only_fields)
{
	pci_write32(vm, TEST_DEVFN, 0x00, 0);
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0), 0x56781234);
	pci_write8(vm, TEST_DEVFN, 0x3d, 4);
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0x3c) >> 8 & 0xff, 1);
	/* capability ID and next pointer are read-only, the rest is not */
	pci_write32(vm, TEST_DEVFN, 0x80, 0xffffffff);
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0x80) & 0xffff, 0x0005);
	pci_write8(vm, TEST_DEVFN, 0x3c, 11);
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0x3c) & 0xff, 11);
}

Test(vmm_pci, intx_routing)
{
	/* slot 5 INTA -> PIRQ (5 + 1 - 1) & 3 = B -> route register 0x61 */
	pci_write8(vm, 1 << 3, 0x61, 11);
	pci_set_intx(&dev, true);
	cr_assert(vm->gsi_level[11]);
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0x04) >> 16 & 0x08, 0x08,
		     "interrupt status");
	pci_set_intx(&dev, false);
	cr_assert_not(vm->gsi_level[11]);
	/* interrupt disable in the command register */
	pci_write32(vm, TEST_DEVFN, 0x04, 0x400);
	pci_set_intx(&dev, true);
	cr_assert_not(vm->gsi_level[11]);
	pci_set_intx(&dev, false);
	/* disabled route: nothing */
	pci_write32(vm, TEST_DEVFN, 0x04, 0);
	pci_write8(vm, 1 << 3, 0x61, 0x80);
	pci_set_intx(&dev, true);
	for (unsigned i = 0; i < VMM_NUM_GSI; i++)
		cr_assert_not(vm->gsi_level[i]);
}

Test(vmm_pci, msi)
{
	cr_assert_not(pci_msi_notify(&dev, 0x80), "disabled: use INTx");
	pci_write32(vm, TEST_DEVFN, 0x84, 0xfee00000);
	pci_write32(vm, TEST_DEVFN, 0x88, 0);
	pci_write32(vm, TEST_DEVFN, 0x8c, 0x4041);
	pci_write8(vm, TEST_DEVFN, 0x82, 0x81);
	cr_assert(pci_msi_notify(&dev, 0x80));
	cr_assert_eq(vm->last_msi_address, 0xfee00000);
	cr_assert_eq(vm->last_msi_data, 0x4041);
	cr_assert_not(pci_msi_notify(&dev, 0xfc), "capability out of range");
}

Test(vmm_pci, power_management_block)
{
	unsigned pm = 1 << 3 | 3;
	uint32_t t1, t2;

	/* as SeaBIOS programs it */
	pci_write32(vm, pm, 0x40, 0xb000 | 1);
	cr_assert_eq(pio_read(vm, 0xb008, 4), 0xffffffff, "not enabled yet");
	pci_write8(vm, pm, 0x80, 1);
	t1 = pio_read(vm, 0xb008, 4);
	usleep(2000);
	t2 = pio_read(vm, 0xb008, 4);
	cr_assert_lt(t1, 1u << 24);
	cr_assert_gt((t2 - t1) & 0xffffff, 3579, "3.58 MHz PM timer");
	/* SMM setup is skipped: APMC enable is preset in DEVACTB */
	cr_assert_eq(pci_read32(vm, pm, 0x58) & (1u << 25), 1u << 25);
	/* ACPI enable through the APM port */
	cr_assert_eq(pio_read(vm, 0xb004, 2) & 1, 0);
	outb(vm, 0xb2, 0xf1);
	cr_assert_eq(pio_read(vm, 0xb004, 2) & 1, 1, "SCI_EN");
	/* S3 is refused quietly, S5 (type 0) powers off */
	pio_write(vm, 0xb004, 1 << 10 | 1 << 13 | 1, 2);
	cr_assert_eq(vm->request, VMM_RUNNING);
	pio_write(vm, 0xb004, 0 << 10 | 1 << 13 | 1, 2);
	cr_assert_eq(vm->request, VMM_REQUEST_POWEROFF);
	/* moving the block: the old base stops decoding */
	pci_write32(vm, pm, 0x40, 0x600 | 1);
	cr_assert_eq(pio_read(vm, 0xb004, 2), 0xffff);
	cr_assert_eq(pio_read(vm, 0x604, 2) & 1, 1);
	/* out-of-block accesses */
	cr_assert_eq(pio_read(vm, 0x63e, 4), 0xffffffff);
}

Test(vmm_pci, reset_control_register)
{
	outb(vm, 0xcf9, 0x02);
	cr_assert_eq(vm->request, VMM_RUNNING, "bit 1 alone only selects");
	cr_assert_eq(inb(vm, 0xcf9), 0x02);
	outb(vm, 0xcf9, 0x06);
	cr_assert_eq(vm->request, VMM_REQUEST_RESET);
}

Test(vmm_pci, port_a)
{
	cr_assert_eq(inb(vm, 0x92), 0x02, "A20 on, no reset");
	outb(vm, 0x92, 0x00);
	cr_assert_eq(inb(vm, 0x92), 0x02, "A20 stays on");
	cr_assert_eq(vm->request, VMM_RUNNING);
	outb(vm, 0x92, 0x03);
	cr_assert_eq(vm->request, VMM_REQUEST_RESET, "fast reset");
}

Test(vmm_pci, keyboard_controller)
{
	struct i8042 *kbc = i8042_create(vm);

	cr_assert_not_null(kbc);
	outb(vm, 0x64, 0xaa);
	cr_assert_eq(inb(vm, 0x64) & 0x01, 0x01, "output buffer full");
	cr_assert_eq(inb(vm, 0x60), 0x55, "self test passed");
	outb(vm, 0x60, 0xff); /* keyboard reset */
	cr_assert_eq(inb(vm, 0x60), 0xfa);
	cr_assert_eq(inb(vm, 0x60), 0xaa);
	outb(vm, 0x64, 0x20);
	cr_assert_eq(inb(vm, 0x60) & 0x01, 0x01, "keyboard interrupts on");
	cr_assert(vm->gsi_level[1] == false);
	cr_assert_eq(vm->request, VMM_RUNNING);
	outb(vm, 0x64, 0xfe); /* pulse the reset line */
	cr_assert_eq(vm->request, VMM_REQUEST_RESET);
	i8042_destroy(kbc);
}

Test(vmm_pci, hostile_config_accesses)
{
	/* unaligned dword at 0xcfd, byte at 0xcf8, word at 0xcfa */
	pio_write(vm, 0xcf8, 0x80000000 | TEST_DEVFN << 8 | 0xfc, 4);
	cr_assert_eq(pio_read(vm, 0xcfd, 4), 0xffffffff);
	pio_write(vm, 0xcfd, 0x12345678, 4);
	pio_write(vm, 0xcf8, 0x12, 1);
	cr_assert_eq(pio_read(vm, 0xcfa, 2), 0xffff);
	/* direct helper with out-of-range offsets and functions */
	{
		uint32_t v = 0;

		pci_config_access(vm, 256, 0, &v, 4, false);
		cr_assert_eq(v, 0xffffffff);
		pci_config_access(vm, TEST_DEVFN, 254, &v, 4, false);
		cr_assert_eq(v, 0xffffffff);
		pci_config_access(vm, TEST_DEVFN, 254, &v, 4, true);
	}
	/* hammer every register of every function with all ones */
	for (unsigned devfn = 0; devfn < 256; devfn++)
		for (unsigned off = 0; off < 256; off += 4)
			pci_write32(vm, devfn, off, 0xffffffff);
	cr_assert_eq(pci_read32(vm, 0, 0), 0x12378086, "IDs survive");
	cr_assert_eq(pci_read32(vm, TEST_DEVFN, 0x10), 0xffffffe1);
}
