/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: the UHCI controller with the USB tablet on port 1,
 * driven as a hostile guest would: register writes and reads, words
 * written anywhere in a 256 KiB window of guest RAM that holds the frame
 * list (frame list base 0x10000 after each input's reset), frames run, and
 * pointer events from the viewer's side.  Link pointers may lead anywhere
 * in the 4 GiB space; the controller must end each frame in bounded work
 * and halt on what is not RAM.
 *
 * Input: 8-byte operations {u8 op, u8 arg, u16 addr, u32 value}; op % 6:
 *   0 register write (offset addr % 32, size 1/2/4 by arg & 3)
 *   1 register read  (likewise)
 *   2 RAM write of value at 0x10000 + (addr * 4) % 256 KiB
 *   3 run frames     (arg % 64 ms)
 *   4 pointer event  (x = value & 0x7fff, y = (value >> 16) & 0x7fff,
 *                     buttons arg & 7, wheel (int8_t)addr)
 *   5 PCI command register (value & 0x7: I/O, memory, bus master)
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
 * fuzz-sources: vmm/devices/uhci.c vmm/devices/usb_tablet.c vmm/kvm.c vmm/bus.c vmm/pci.c
 */
#include <stdlib.h>
#include <string.h>

#include "vmm/devices/usb.h"
#include "vmm/input.h"
#include "vmm/machine.h"

#define FUZZ_UHCI_IO 0xc000
#define FUZZ_UHCI_DEVFN (1u << 3 | 2)
#define FUZZ_UHCI_WINDOW 0x10000u
#define FUZZ_UHCI_WINDOW_SIZE (256u << 10)

static struct vmm *fuzz_uhci_vm;
static struct uhci *fuzz_uhci;
static struct usb_tablet *fuzz_uhci_tablet;

static void fuzz_uhci_io(uint64_t addr, uint32_t value, unsigned size,
			 bool write)
{
	uint8_t data[8];

	memcpy(data, &value, 4);
	memset(data + 4, 0, 4);
	vmm_io_bus_access(&fuzz_uhci_vm->pio, addr, data, size, write);
}

static void fuzz_uhci_config(unsigned off, uint32_t value)
{
	fuzz_uhci_io(0xcf8, 0x80000000u | FUZZ_UHCI_DEVFN << 8 | off, 4, true);
	fuzz_uhci_io(0xcfc, value, 4, true);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned sizes[4] = { 1, 2, 4, 2 };

	if (!fuzz_uhci_vm) {
		char err[256];

		fuzz_uhci_vm = vmm_create_test(16u << 20);
		if (!fuzz_uhci_vm)
			abort();
		fuzz_uhci = uhci_create_manual(fuzz_uhci_vm, 1, 2, err,
					       sizeof(err));
		fuzz_uhci_tablet = usb_tablet_create();
		if (!fuzz_uhci || !fuzz_uhci_tablet ||
		    uhci_attach(fuzz_uhci, 0,
				usb_tablet_device(fuzz_uhci_tablet)))
			abort();
	}
	/* every input starts from a reset controller whose frame list is in
	 * the window, bus mastering on */
	fuzz_uhci_config(0x20, FUZZ_UHCI_IO);
	fuzz_uhci_config(0x04, 0x5);
	fuzz_uhci_io(FUZZ_UHCI_IO, 0x0002, 2, true);
	fuzz_uhci_io(FUZZ_UHCI_IO + 0x08, FUZZ_UHCI_WINDOW, 4, true);
	memset(vmm_gpa_to_hva(fuzz_uhci_vm, FUZZ_UHCI_WINDOW,
			      FUZZ_UHCI_WINDOW_SIZE),
	       0, FUZZ_UHCI_WINDOW_SIZE);

	for (size_t i = 0; i + 8 <= size; i += 8) {
		const uint8_t *op = data + i;
		unsigned arg = op[1];
		uint16_t addr = op[2] | op[3] << 8;
		uint32_t value;

		memcpy(&value, op + 4, 4);
		switch (op[0] % 6) {
		case 0:
		case 1: {
			unsigned sz = sizes[arg & 3];
			unsigned off = (addr % 32) & ~(sz - 1);

			fuzz_uhci_io(FUZZ_UHCI_IO + off, value, sz,
				     op[0] % 6 == 0);
			break;
		}
		case 2: {
			uint32_t at = FUZZ_UHCI_WINDOW +
				      (addr * 4u) % FUZZ_UHCI_WINDOW_SIZE;

			memcpy(vmm_gpa_to_hva(fuzz_uhci_vm, at, 4), &value, 4);
			break;
		}
		case 3:
			uhci_advance(fuzz_uhci, arg % 64);
			break;
		case 4:
			usb_tablet_pointer_event(fuzz_uhci_tablet,
						 value & INPUT_ABSOLUTE_MAX,
						 (value >> 16) &
							 INPUT_ABSOLUTE_MAX,
						 (int8_t)addr, arg & 7);
			break;
		case 5:
			fuzz_uhci_config(0x04, value & 0x7);
			break;
		}
	}
	return 0;
}
