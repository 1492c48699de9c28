/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: the standard VGA's register file (ports 0x3B0-0x3DF),
 * the Bochs DISPI registers (ports 0x1CE/0x1CF and BAR2), the legacy
 * window 0xA0000-0xBFFFF and the framebuffer BAR, driven as a hostile
 * guest would, with the renderer and the text dump run over whatever
 * state results.  Video memory has inaccessible guard pages on both
 * sides, so an access computed past it crashes here instead of passing
 * unnoticed.
 *
 * Input: 8-byte operations {u8 op, u8 arg, u16 addr, u32 value}; op & 7:
 *   0 port write   (0x3B0 + addr % 0x30, or 0x1CE-0x1D0 when arg & 0x80)
 *   1 port read    (likewise)
 *   2 window write (0xA0000 + (arg << 16 | addr) % 0x20000; size arg & 3)
 *   3 window read
 *   4 DISPI write  (index arg % 16)
 *   5 BAR2 access  (offset addr % 0x1000; write when arg & 1; size 1/2/4)
 *   6 framebuffer write at value % (video memory + 64 KiB)
 *   7 draw the screen (renderer and text dump)
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
 * fuzz-sources: vmm/devices/vga.c vmm/display/render.c vmm/display/text.c vmm/kvm.c vmm/bus.c vmm/pci.c
 */
#include <stdlib.h>
#include <string.h>

#include "vmm/devices/vga.h"
#include "vmm/display/render.h"
#include "vmm/machine.h"

#define FB_ADDR 0xe0000000u
#define MMIO_ADDR 0xe1000000u
#define DEVFN (2u << 3)
#define VRAM (4u << 20)

static struct vmm *vm;
static struct vga *vga;
static struct renderer *ren;

static void io(struct vmm_io_bus *bus, uint64_t addr, uint32_t value,
	       unsigned size, bool write)
{
	uint8_t data[8];

	memcpy(data, &value, 4);
	memset(data + 4, 0, 4);
	vmm_io_bus_access(bus, addr, data, size, write);
}

static void config_write(unsigned off, uint32_t value)
{
	uint32_t address = 0x80000000u | DEVFN << 8 | off;

	io(&vm->pio, 0xcf8, address, 4, true);
	io(&vm->pio, 0xcfc, value, 4, true);
}

static void draw(void)
{
	struct render_rect rect;
	bool resized;
	char *text = NULL;

	renderer_update(ren, &resized, &rect);
	if (render_text(vga, &text) == 0)
		free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned sizes[4] = { 1, 2, 4, 1 };

	if (!vm) {
		char err[256];

		vm = vmm_create_test(16u << 20);
		vga = vga_create(vm, 2, VRAM, err, sizeof(err));
		ren = renderer_create(vga);
		if (!vm || !vga || !ren)
			abort();
	}
	/* power-on state, then the BARs where SeaBIOS would put them */
	for (size_t i = 0; i < vm->reset_hook_count; i++)
		vm->reset_hooks[i].fn(vm->reset_hooks[i].opaque);
	config_write(0x10, FB_ADDR);
	config_write(0x18, MMIO_ADDR);
	config_write(0x04, 0x3);

	for (size_t at = 0; at + 8 <= size; at += 8) {
		const uint8_t *op = data + at;
		unsigned arg = op[1];
		unsigned addr = op[2] | op[3] << 8;
		uint32_t value = op[4] | op[5] << 8 | op[6] << 16 |
				 (uint32_t)op[7] << 24;
		uint32_t port = (arg & 0x80) ? 0x1ce + addr % 3
					     : 0x3b0 + addr % 0x30;
		uint32_t window = 0xa0000 + ((arg << 16 | addr) % 0x20000);

		switch (op[0] & 7) {
		case 0:
			io(&vm->pio, port, value, sizes[arg & 3], true);
			break;
		case 1:
			io(&vm->pio, port, 0, sizes[arg & 3], false);
			break;
		case 2:
			io(&vm->mmio, window, value, sizes[arg & 3], true);
			break;
		case 3:
			io(&vm->mmio, window, 0, sizes[arg & 3], false);
			break;
		case 4:
			io(&vm->pio, 0x1ce, arg % 16, 2, true);
			io(&vm->pio, 0x1cf, value, 2, true);
			break;
		case 5:
			io(&vm->mmio, MMIO_ADDR + addr % 0x1000, value,
			   sizes[(arg >> 1) & 3], arg & 1);
			break;
		case 6:
			io(&vm->mmio, FB_ADDR + value % (VRAM + 0x10000), value,
			   sizes[arg & 3], true);
			break;
		default:
			draw();
			break;
		}
	}
	draw();
	return 0;
}
