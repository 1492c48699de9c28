/* SPDX-License-Identifier: MIT */
/* Shared by test_vmm_vga.c and test_vmm_display.c: VGA register writes
 * and BIOS mode 3 as a guest's VGA BIOS sets it up. */
#ifndef VMM_VGA_UTIL_H
#define VMM_VGA_UTIL_H

#include "vmm_test_util.h"

static inline void vga_seq(struct vmm *vm, unsigned i, uint8_t v)
{
	outb(vm, 0x3c4, i);
	outb(vm, 0x3c5, v);
}

static inline void vga_gfx(struct vmm *vm, unsigned i, uint8_t v)
{
	outb(vm, 0x3ce, i);
	outb(vm, 0x3cf, v);
}

static inline void vga_crtc(struct vmm *vm, unsigned i, uint8_t v)
{
	outb(vm, 0x3d4, i);
	outb(vm, 0x3d5, v);
}

static inline void vga_dac(struct vmm *vm, unsigned i, uint8_t r, uint8_t g,
			   uint8_t b)
{
	outb(vm, 0x3c8, i);
	outb(vm, 0x3c9, r);
	outb(vm, 0x3c9, g);
	outb(vm, 0x3c9, b);
}

static inline void vga_window_write(struct vmm *vm, uint32_t addr, uint8_t v)
{
	uint64_t value = v;

	vmm_io_bus_access(&vm->mmio, addr, &value, 1, true);
}

/* BIOS mode 3 (80x25 text, 9x16 cells), register values from the IBM VGA
 * technical reference tables */
static inline void vga_set_text_mode(struct vmm *vm)
{
	static const uint8_t sr[] = { 0x03, 0x00, 0x03, 0x00, 0x02 };
	static const uint8_t cr[] = { 0x5f, 0x4f, 0x50, 0x82, 0x55, 0x81, 0xbf,
				      0x1f, 0x00, 0x4f, 0x0d, 0x0e, 0x00, 0x00,
				      0x00, 0x00, 0x9c, 0x8e, 0x8f, 0x28, 0x1f,
				      0x96, 0xb9, 0xa3, 0xff };
	static const uint8_t gr[] = { 0x00, 0x00, 0x00, 0x00, 0x00,
				      0x10, 0x0e, 0x00, 0xff };
	static const uint8_t ar[] = { 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14,
				      0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d,
				      0x3e, 0x3f, 0x0c, 0x00, 0x0f, 0x08, 0x00 };

	outb(vm, 0x3c2, 0x67);
	for (unsigned i = 0; i < sizeof(sr); i++)
		vga_seq(vm, i, sr[i]);
	for (unsigned i = 0; i < sizeof(cr); i++)
		vga_crtc(vm, i, cr[i]);
	for (unsigned i = 0; i < sizeof(gr); i++)
		vga_gfx(vm, i, gr[i]);
	inb(vm, 0x3da); /* attribute flip-flop to index */
	for (unsigned i = 0; i < sizeof(ar); i++) {
		outb(vm, 0x3c0, i);
		outb(vm, 0x3c0, ar[i]);
	}
	outb(vm, 0x3c0, 0x20); /* palette on: the screen shows */
}

/* As SeaVGABIOS loads a font: plane 2 alone, sequential addressing */
static inline void vga_load_glyph(struct vmm *vm, uint8_t ch,
				  const uint8_t *rows, unsigned n)
{
	vga_seq(vm, 2, 0x04);
	vga_seq(vm, 4, 0x07);
	vga_gfx(vm, 4, 0x02);
	vga_gfx(vm, 5, 0x00);
	vga_gfx(vm, 6, 0x04);
	for (unsigned i = 0; i < n; i++)
		vga_window_write(vm, 0xa0000 + ch * 32 + i, rows[i]);
	vga_seq(vm, 2, 0x03);
	vga_seq(vm, 4, 0x02);
	vga_gfx(vm, 4, 0x00);
	vga_gfx(vm, 5, 0x10);
	vga_gfx(vm, 6, 0x0e);
}

/* character and attribute at a cell of the 80-column text screen */
static inline void vga_put_char(struct vmm *vm, unsigned row, unsigned col,
				uint8_t ch, uint8_t attr)
{
	vga_window_write(vm, 0xb8000 + 2 * (row * 80 + col), ch);
	vga_window_write(vm, 0xb8000 + 2 * (row * 80 + col) + 1, attr);
}

#endif
