/* SPDX-License-Identifier: MIT */
/*
 * Standard VGA + Bochs VBE: PCI identity and BAR decoding, the DISPI
 * interface, the planar write and read modes against values worked out
 * from the VGA reference, text mode drawn through a font in plane 2, the
 * renderer's changed rectangles, and hostile register values.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "vmm_test_util.h"

#include "vmm/devices/vga.h"
#include "vmm/display/render.h"

#define RAM (32u << 20)
#define SLOT 2
#define DEVFN (SLOT << 3)
#define FB_ADDR 0xe0000000u
#define MMIO_ADDR 0xe1000000u

static struct vmm *vm;
static struct vga *vga;
static struct renderer *ren;

static void setup(void)
{
	char err[256];

	vm = vmm_create_test(RAM);
	cr_assert_not_null(vm);
	vga = vga_create(vm, SLOT, VGA_VRAM_DEFAULT, err, sizeof(err));
	cr_assert_not_null(vga, "%s", err);
	ren = renderer_create(vga);
	cr_assert_not_null(ren);
}

static void teardown(void)
{
	renderer_destroy(ren);
	vga_destroy(vga);
	vmm_destroy(vm);
}

TestSuite(vmm_vga, .init = setup, .fini = teardown, .timeout = 30);

static void mmio_write(uint64_t addr, uint64_t value, unsigned size)
{
	vmm_io_bus_access(&vm->mmio, addr, &value, size, true);
}

static uint64_t mmio_read(uint64_t addr, unsigned size)
{
	uint64_t value = 0;

	vmm_io_bus_access(&vm->mmio, addr, &value, size, false);
	return value;
}

static void dispi_write(unsigned index, uint16_t value)
{
	pio_write(vm, 0x1ce, index, 2);
	pio_write(vm, 0x1cf, value, 2);
}

static uint16_t dispi_read(unsigned index)
{
	pio_write(vm, 0x1ce, index, 2);
	return pio_read(vm, 0x1cf, 2);
}

static void map_bars(void)
{
	pci_write32(vm, DEVFN, 0x10, FB_ADDR);
	pci_write32(vm, DEVFN, 0x18, MMIO_ADDR);
	pci_write32(vm, DEVFN, 0x04, 0x2);
}

static void seq(unsigned i, uint8_t v)
{
	outb(vm, 0x3c4, i);
	outb(vm, 0x3c5, v);
}

static void gfx(unsigned i, uint8_t v)
{
	outb(vm, 0x3ce, i);
	outb(vm, 0x3cf, v);
}

static void crtc(unsigned i, uint8_t v)
{
	outb(vm, 0x3d4, i);
	outb(vm, 0x3d5, v);
}

static void dac(unsigned i, uint8_t r, uint8_t g, uint8_t b)
{
	outb(vm, 0x3c8, i);
	outb(vm, 0x3c9, r);
	outb(vm, 0x3c9, g);
	outb(vm, 0x3c9, b);
}

static void window_write(uint32_t addr, uint8_t v)
{
	mmio_write(addr, v, 1);
}

static uint8_t window_read(uint32_t addr)
{
	return mmio_read(addr, 1);
}

static const uint8_t *vram(void)
{
	uint32_t size;

	return vga_vram(vga, &size);
}

static uint8_t plane_byte(uint32_t offset, unsigned plane)
{
	return vram()[offset * 4 + plane];
}

/* BIOS mode 3 (80x25 text, 9x16 cells), register values from the IBM
 * VGA technical reference tables */
static void set_text_mode(void)
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
		seq(i, sr[i]);
	for (unsigned i = 0; i < sizeof(cr); i++)
		crtc(i, cr[i]);
	for (unsigned i = 0; i < sizeof(gr); i++)
		gfx(i, gr[i]);
	inb(vm, 0x3da); /* attribute flip-flop to index */
	for (unsigned i = 0; i < sizeof(ar); i++) {
		outb(vm, 0x3c0, i);
		outb(vm, 0x3c0, ar[i]);
	}
	outb(vm, 0x3c0, 0x20); /* palette on: the screen shows */
}

/* As SeaVGABIOS loads a font: plane 2 alone, sequential addressing */
static void load_glyph(uint8_t ch, const uint8_t *rows, unsigned n)
{
	seq(2, 0x04);
	seq(4, 0x07);
	gfx(4, 0x02);
	gfx(5, 0x00);
	gfx(6, 0x04);
	for (unsigned i = 0; i < n; i++)
		window_write(0xa0000 + ch * 32 + i, rows[i]);
	seq(2, 0x03);
	seq(4, 0x02);
	gfx(4, 0x00);
	gfx(5, 0x10);
	gfx(6, 0x0e);
}

static void update(bool *resized, struct render_rect *rect)
{
	cr_assert_eq(renderer_update(ren, resized, rect), 0);
}

static uint32_t pixel(unsigned x, unsigned y)
{
	unsigned w, h;
	const uint32_t *p = renderer_surface(ren, &w, &h);

	cr_assert(x < w && y < h);
	return p[y * w + x];
}

Test(vmm_vga, pci_identity_and_bars)
{
	struct pci_device *dev = vga_pci_device(vga);
	uint32_t id = pci_read32(vm, DEVFN, 0);

	cr_assert_eq(id, 0x11111234);
	cr_assert_eq(pci_read32(vm, DEVFN, 0x08) >> 8, 0x030000);
	/* BAR0: prefetchable memory, sized as video memory */
	pci_write32(vm, DEVFN, 0x10, 0xffffffff);
	cr_assert_eq(pci_read32(vm, DEVFN, 0x10), ~(VGA_VRAM_DEFAULT - 1) | 8);
	pci_write32(vm, DEVFN, 0x18, 0xffffffff);
	cr_assert_eq(pci_read32(vm, DEVFN, 0x18), 0xfffff000u);
	map_bars();
	cr_assert(dev->bar_mapped[0]);
	cr_assert_eq(dev->bar_addr[0], FB_ADDR);
	/* the framebuffer region follows the BAR */
	cr_assert_eq(vm->device_memory[0].gpa, FB_ADDR);
	cr_assert_eq(vm->device_memory[0].size, VGA_VRAM_DEFAULT);
	pci_write32(vm, DEVFN, 0x10, 0xd0000000u);
	cr_assert_eq(vm->device_memory[0].gpa, 0xd0000000u);
	mmio_write(0xd0000000u + 16, 0xab, 1);
	cr_assert_eq(vram()[16], 0xab);
	/* nothing answers at the old address any more */
	cr_assert_eq(mmio_read(FB_ADDR + 16, 1), 0xff);
	/* decoding off: the region goes */
	pci_write32(vm, DEVFN, 0x04, 0);
	cr_assert_eq(vm->device_memory[0].size, 0);
}

Test(vmm_vga, dispi_identity_and_caps)
{
	cr_assert_eq(dispi_read(0), 0xb0c0);
	dispi_write(0, 0xb0c5);
	cr_assert_eq(dispi_read(0), 0xb0c5);
	dispi_write(0, 0x1234); /* not an ID: ignored */
	cr_assert_eq(dispi_read(0), 0xb0c5);
	cr_assert_eq(dispi_read(10), VGA_VRAM_DEFAULT >> 16);
	dispi_write(4, 0x02); /* GETCAPS */
	cr_assert_eq(dispi_read(1), VGA_MAX_WIDTH);
	cr_assert_eq(dispi_read(2), VGA_MAX_HEIGHT);
	cr_assert_eq(dispi_read(3), 32);
	dispi_write(4, 0);
	cr_assert_eq(dispi_read(3), 8);
	/* the same registers through BAR2 */
	map_bars();
	cr_assert_eq(mmio_read(MMIO_ADDR + 0x500, 2), 0xb0c5);
	cr_assert_eq(mmio_read(MMIO_ADDR + 0x600, 4), 8);
	mmio_write(MMIO_ADDR + 0x502, 800, 2);
	cr_assert_eq(dispi_read(1), 800);
}

static void set_vbe_mode(unsigned xres, unsigned yres, unsigned bpp)
{
	dispi_write(4, 0);
	dispi_write(1, xres);
	dispi_write(2, yres);
	dispi_write(3, bpp);
	dispi_write(4, 0x41); /* enabled, linear framebuffer */
}

Test(vmm_vga, dispi_mode_switch_and_pixels)
{
	bool resized;
	struct render_rect rect;
	const struct vga_scanout *s;

	map_bars();
	set_vbe_mode(1024, 768, 32);
	update(&resized, &rect);
	s = renderer_scanout(ren);
	cr_assert_eq(s->kind, VGA_SCANOUT_LINEAR);
	cr_assert_eq(s->width, 1024);
	cr_assert_eq(s->height, 768);
	cr_assert_eq(s->line_bytes, 4096);
	cr_assert(resized);
	cr_assert_eq(dispi_read(6), 1024);
	cr_assert_eq(dispi_read(7), VGA_VRAM_DEFAULT / 4096);
	/* the mode cannot change while enabled */
	dispi_write(1, 640);
	cr_assert_eq(dispi_read(1), 1024);
	/* 32 bpp: B, G, R, X in memory */
	mmio_write(FB_ADDR + (10 * 1024 + 5) * 4, 0x00112233, 4);
	update(&resized, &rect);
	cr_assert_not(resized);
	cr_assert_eq(pixel(5, 10), 0x332211); /* R=0x11 G=0x22 B=0x33 */
	cr_assert_eq(rect.y, 10);
	cr_assert_eq(rect.height, 1);
	cr_assert_eq(rect.x, 5);
	cr_assert_eq(rect.width, 1);

	/* 16 bpp 5-6-5: pure red and pure green */
	set_vbe_mode(800, 600, 16);
	mmio_write(FB_ADDR, 0xf800, 2);
	mmio_write(FB_ADDR + 2, 0x07e0, 2);
	update(&resized, &rect);
	cr_assert(resized);
	cr_assert_eq(pixel(0, 0), 0x0000ff);
	cr_assert_eq(pixel(1, 0), 0x00ff00);

	/* 8 bpp through the DAC (6-bit values widened as QEMU does) */
	set_vbe_mode(640, 480, 8);
	dac(7, 0x3f, 0x2a, 0x00);
	mmio_write(FB_ADDR + 640 + 3, 7, 1);
	update(&resized, &rect);
	cr_assert_eq(pixel(3, 1), 0x00a8ff);

	/* panning: the y offset moves the start line */
	dispi_write(9, 1);
	update(&resized, &rect);
	cr_assert_eq(pixel(3, 0), 0x00a8ff);

	/* disabling returns to the legacy registers */
	dispi_write(4, 0);
	update(&resized, &rect);
	cr_assert_neq(renderer_scanout(ren)->kind, VGA_SCANOUT_LINEAR);
}

Test(vmm_vga, dispi_rejects_modes_that_do_not_fit)
{
	bool resized;
	struct render_rect rect;

	dispi_write(1, 4000);
	dispi_write(2, 3000);
	dispi_write(3, 32);
	dispi_write(4, 0x41);
	cr_assert_eq(dispi_read(4) & 1, 0);
	dispi_write(1, 1024);
	dispi_write(2, 768);
	dispi_write(3, 13); /* no such depth */
	dispi_write(4, 0x41);
	cr_assert_eq(dispi_read(4) & 1, 0);
	/* banked access: a bank past video memory is refused */
	set_vbe_mode(640, 480, 8);
	dispi_write(5, 0xffff);
	cr_assert_eq(dispi_read(5), 0);
	dispi_write(5, 2);
	window_write(0xa0010, 0x5a);
	cr_assert_eq(vram()[2 * 0x10000 + 0x10], 0x5a);
	cr_assert_eq(window_read(0xa0010), 0x5a);
	/* a virtual width and offsets past memory are pulled back */
	dispi_write(6, 0xffff);
	dispi_write(8, 0xfff0);
	dispi_write(9, 0xfff0);
	cr_assert_leq((uint64_t)dispi_read(6) * dispi_read(7),
		      VGA_VRAM_DEFAULT);
	cr_assert_leq((uint64_t)(dispi_read(9) + 480) * dispi_read(6),
		      VGA_VRAM_DEFAULT);
	update(&resized, &rect);
}

Test(vmm_vga, planar_write_modes)
{
	/* mode 12h-like addressing: planar, A0000 64 KiB */
	seq(4, 0x06);
	gfx(6, 0x05);
	seq(2, 0x0f);
	gfx(8, 0xff);

	/* write mode 0 with set/reset on planes 0 and 2 (colour 5), data
	 * 0x3c on planes 1 and 3 */
	gfx(0, 0x05);
	gfx(1, 0x05);
	window_write(0xa0000, 0x3c);
	cr_assert_eq(plane_byte(0, 0), 0xff);
	cr_assert_eq(plane_byte(0, 1), 0x3c);
	cr_assert_eq(plane_byte(0, 2), 0xff);
	cr_assert_eq(plane_byte(0, 3), 0x3c);

	/* rotate by 4 */
	gfx(1, 0x00);
	gfx(3, 0x04);
	window_write(0xa0001, 0x12);
	cr_assert_eq(plane_byte(1, 0), 0x21);
	gfx(3, 0x00);

	/* map mask: only plane 1 written */
	seq(2, 0x02);
	window_write(0xa0002, 0x77);
	cr_assert_eq(plane_byte(2, 0), 0x00);
	cr_assert_eq(plane_byte(2, 1), 0x77);
	seq(2, 0x0f);

	/* bit mask keeps the latched bits: latch 0xff/0x3c/0xff/0x3c */
	window_read(0xa0000);
	gfx(8, 0x0f);
	window_write(0xa0003, 0x00);
	cr_assert_eq(plane_byte(3, 0), 0xf0);
	cr_assert_eq(plane_byte(3, 1), 0x30);
	gfx(8, 0xff);

	/* logical ops against the latch: XOR */
	gfx(3, 0x18);
	window_read(0xa0000);
	window_write(0xa0004, 0x0f);
	cr_assert_eq(plane_byte(4, 0), 0xf0);
	cr_assert_eq(plane_byte(4, 1), 0x33);
	gfx(3, 0x00);

	/* write mode 1: the latches copied */
	gfx(5, 0x01);
	window_read(0xa0000);
	window_write(0xa0005, 0x99);
	for (unsigned p = 0; p < 4; p++)
		cr_assert_eq(plane_byte(5, p), plane_byte(0, p));

	/* write mode 2: data bits are the colour, bit mask 0xc0 */
	gfx(5, 0x02);
	gfx(8, 0xc0);
	window_read(0xa0006); /* latches 0 */
	window_write(0xa0006, 0x0a);
	cr_assert_eq(plane_byte(6, 0), 0x00);
	cr_assert_eq(plane_byte(6, 1), 0xc0);
	cr_assert_eq(plane_byte(6, 2), 0x00);
	cr_assert_eq(plane_byte(6, 3), 0xc0);

	/* write mode 3: set/reset colour, rotated data ANDed with the bit
	 * mask */
	gfx(5, 0x03);
	gfx(8, 0xff);
	gfx(0, 0x09);
	window_read(0xa0007);
	window_write(0xa0007, 0x18);
	cr_assert_eq(plane_byte(7, 0), 0x18);
	cr_assert_eq(plane_byte(7, 1), 0x00);
	cr_assert_eq(plane_byte(7, 3), 0x18);

	/* read mode 0 picks the plane in GR4 */
	gfx(5, 0x00);
	gfx(4, 1);
	cr_assert_eq(window_read(0xa0000), 0x3c);
	/* read mode 1: pixels of colour 5 (planes 0, 2 set, 1, 3 clear) */
	gfx(5, 0x08);
	gfx(2, 0x05);
	gfx(7, 0x0f);
	cr_assert_eq(window_read(0xa0000), 0xc3);
	gfx(7, 0x00); /* all don't care: every pixel matches */
	cr_assert_eq(window_read(0xa0000), 0xff);
}

Test(vmm_vga, chain4_and_memory_map)
{
	seq(4, 0x0e); /* chain-4 */
	seq(2, 0x0f);
	gfx(6, 0x05); /* A0000 64 KiB */
	window_write(0xa0123, 0x42);
	cr_assert_eq(vram()[0x123], 0x42);
	/* outside the 64 KiB window nothing is decoded */
	window_write(0xb0000, 0x11);
	cr_assert_eq(window_read(0xb0000), 0xff);
	/* B8000 32 KiB map */
	gfx(6, 0x0d);
	cr_assert_eq(window_read(0xa0123), 0xff);
	window_write(0xb8001, 0x24);
	cr_assert_eq(vram()[1], 0x24);
}

Test(vmm_vga, dac_read_back)
{
	dac(0x10, 1, 2, 3);
	dac(0x11, 4, 5, 6);
	outb(vm, 0x3c7, 0x10);
	cr_assert_eq(inb(vm, 0x3c7), 0x03);
	cr_assert_eq(inb(vm, 0x3c9), 1);
	cr_assert_eq(inb(vm, 0x3c9), 2);
	cr_assert_eq(inb(vm, 0x3c9), 3);
	cr_assert_eq(inb(vm, 0x3c9), 4);
	cr_assert_eq(inb(vm, 0x3c8), 0x12);
}

Test(vmm_vga, text_mode_through_font_and_palette)
{
	static const uint8_t glyph[16] = { 0x81, 0x42, 0x24, 0x18 };
	bool resized;
	struct render_rect rect;
	const struct vga_scanout *s;

	set_text_mode();
	load_glyph('A', glyph, 16);
	dac(0x01, 0x00, 0x00, 0x2a); /* blue */
	dac(0x3f, 0x3f, 0x3f, 0x3f); /* bright white */
	/* 'A', white on blue, at row 0 column 1 (odd/even addressing) */
	window_write(0xb8002, 'A');
	window_write(0xb8003, 0x1f);
	crtc(0x0e, 0);
	crtc(0x0f, 1); /* cursor on that cell, lines 13-14 */
	update(&resized, &rect);
	s = renderer_scanout(ren);
	cr_assert_eq(s->kind, VGA_SCANOUT_TEXT);
	cr_assert_eq(s->cols, 80);
	cr_assert_eq(s->rows, 25);
	cr_assert_eq(s->width, 720);
	cr_assert_eq(s->height, 400);
	cr_assert_eq(vram()[4], 'A');
	cr_assert_eq(vram()[5], 0x1f);
	/* row 0 of the glyph: 0x81 -> first and eighth dot */
	cr_assert_eq(pixel(9 + 0, 0), 0xffffff);
	cr_assert_eq(pixel(9 + 1, 0), 0xa80000); /* B=0xa8 */
	cr_assert_eq(pixel(9 + 7, 0), 0xffffff);
	cr_assert_eq(pixel(9 + 8, 0), 0xa80000); /* ninth column */
	cr_assert_eq(pixel(9 + 3, 3), 0xffffff);
	/* the cursor fills lines 13 and 14 */
	cr_assert_eq(pixel(9 + 4, 13), 0xffffff);
	cr_assert_eq(pixel(9 + 4, 12), 0xa80000);
	/* nothing changed: an empty rectangle */
	update(&resized, &rect);
	cr_assert_eq(rect.width, 0);
	/* a character elsewhere: the rectangle covers its cell */
	window_write(0xb8000 + 2 * (80 * 3 + 10), 'A');
	window_write(0xb8000 + 2 * (80 * 3 + 10) + 1, 0x1f);
	update(&resized, &rect);
	cr_assert_eq(rect.x, 90);
	cr_assert_eq(rect.y, 48);
	cr_assert_eq(rect.width, 9);
	cr_assert_eq(rect.height, 16);
}

Test(vmm_vga, planar_16_colour_render)
{
	bool resized;
	struct render_rect rect;

	set_text_mode();
	/* graphics, 640 pixels (80 char clocks), 16 colours */
	gfx(6, 0x05);
	gfx(5, 0x00);
	seq(4, 0x06);
	crtc(0x09, 0x40);
	dac(0x3f, 0x3f, 0x3f, 0x3f);
	seq(2, 0x0f);
	gfx(8, 0xff);
	gfx(1, 0x0f);
	gfx(0, 0x0f); /* colour 15 through set/reset, leftmost pixel */
	gfx(8, 0x80);
	window_write(0xa0000 + 80 * 2, 0x00);
	update(&resized, &rect);
	cr_assert_eq(renderer_scanout(ren)->kind, VGA_SCANOUT_PLANAR4);
	cr_assert_eq(renderer_scanout(ren)->width, 640);
	cr_assert_eq(pixel(0, 2), 0xffffff);
	cr_assert_eq(pixel(1, 2), 0);
}

Test(vmm_vga, hostile_registers_stay_inside_video_memory)
{
	bool resized;
	struct render_rect rect;

	set_text_mode();
	/* start address and cursor at the end of the 16-bit range, every
	 * font map, a huge offset, maximal scan lines */
	crtc(0x0c, 0xff);
	crtc(0x0d, 0xff);
	crtc(0x13, 0xff);
	crtc(0x09, 0x1f);
	seq(3, 0x3f);
	update(&resized, &rect);
	/* overflowing displays in graphics modes */
	gfx(6, 0x01);
	crtc(0x01, 0xff);
	crtc(0x12, 0xff);
	crtc(0x07, 0x42);
	update(&resized, &rect);
	gfx(5, 0x40);
	update(&resized, &rect);
	/* random register storms */
	srand(7);
	for (unsigned i = 0; i < 20000; i++) {
		unsigned port = 0x3b0 + rand() % 0x30;

		outb(vm, port, rand());
		if (i % 7 == 0)
			dispi_write(rand() % 12, rand());
		if (i % 5 == 0)
			window_write(0xa0000 + rand() % 0x20000, rand());
		if (i % 3 == 0)
			window_read(0xa0000 + rand() % 0x20000);
		if (i % 500 == 0)
			update(&resized, &rect);
	}
	update(&resized, &rect);
	/* out-of-range BAR accesses */
	map_bars();
	mmio_write(FB_ADDR + VGA_VRAM_DEFAULT - 2, 0x1234, 4);
	cr_assert_eq(mmio_read(MMIO_ADDR + 0xffe, 4), 0xffffffff);
}

Test(vmm_vga, reset_returns_to_power_on_state)
{
	set_vbe_mode(640, 480, 32);
	cr_assert_eq(dispi_read(4) & 1, 1);
	for (size_t i = 0; i < vm->reset_hook_count; i++)
		vm->reset_hooks[i].fn(vm->reset_hooks[i].opaque);
	cr_assert_eq(dispi_read(4), 0);
	cr_assert_eq(dispi_read(0), 0xb0c0);
}
