/* SPDX-License-Identifier: MIT */
/*
 * Standard VGA with the Bochs VBE extensions (QEMU's "-vga std"): the
 * register file, the legacy memory window and the linear framebuffer.
 * The device only keeps registers and video memory; what the screen shows
 * is described by struct vga_scanout, which the renderer (vmm/display/)
 * turns into pixels.
 */
#ifndef IMGVM_VGA_H
#define IMGVM_VGA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/vmm.h"

#define VGA_VRAM_DEFAULT (16u << 20)
#define VGA_VRAM_MIN (4u << 20)
#define VGA_VRAM_MAX (256u << 20)
#define VGA_MAX_WIDTH 1920
#define VGA_MAX_HEIGHT 1200
#define VGA_PAGE_SIZE 4096u

struct vga;

/* vram_size: a power of two from VGA_VRAM_MIN to VGA_VRAM_MAX.  The
 * function sits at 00:slot.0. */
struct vga *vga_create(struct vmm *vm, unsigned slot, uint32_t vram_size,
		       char *err, size_t errlen);
void vga_destroy(struct vga *vga);
struct pci_device *vga_pci_device(struct vga *vga);

enum vga_scanout_kind {
	VGA_SCANOUT_BLANK,   /* screen off or a mode we do not draw */
	VGA_SCANOUT_TEXT,    /* alphanumeric: character, attribute, font */
	VGA_SCANOUT_PLANAR4, /* 16 colours, one bit per pixel in each plane */
	VGA_SCANOUT_CHAIN4,  /* 256 colours, one byte a pixel, chained */
	VGA_SCANOUT_LINEAR,  /* VBE: packed pixels at 8/15/16/24/32 bpp */
};

/* What the screen shows now.  Offsets are into the video memory as the
 * device stores it (legacy modes: four planes interleaved, byte n of plane
 * p at 4n+p).  The renderer checks every offset against vram_size. */
struct vga_scanout {
	enum vga_scanout_kind kind;
	unsigned width, height; /* pixels on screen */
	uint32_t start;		/* byte offset of the first line */
	uint32_t line_bytes;	/* from one line (text: row) to the next */
	/* 0x00RRGGBB of each DAC entry, and the attribute controller's
	 * mapping of the 16 legacy colours to DAC entries */
	uint32_t palette[256];
	uint8_t colour_map[16];
	/* graphics: lines per source line (scan doubling, max scan line);
	 * pixels per source pixel horizontally */
	unsigned line_repeat, pixel_repeat;
	unsigned bpp; /* VBE: 8, 15, 16, 24, 32 */
	/* text */
	unsigned cols, rows, char_width, char_height;
	uint32_t font_offset[2]; /* plane-2 font for attribute bit 3 = 0/1 */
	bool line_graphics;	 /* 9th column repeats 0xB0-0xDF */
	bool blink;		 /* attribute bit 7 is blink, not colour */
	bool cursor_visible;
	unsigned cursor_col, cursor_row, cursor_start, cursor_end;
	/* bumps on every register write that changes the picture (mode,
	 * palette, start address, cursor) */
	uint64_t generation;
};

/* A consistent copy of the scan-out registers.  The memory is read
 * without the device lock: a frame torn by a concurrent guest write is
 * redrawn on the next refresh, since the write marks its page dirty. */
void vga_get_scanout(struct vga *vga, struct vga_scanout *out);
const uint8_t *vga_vram(struct vga *vga, uint32_t *size);

/* ORs the video memory pages written since the last call into bitmap
 * (bit n = page n of VGA_PAGE_SIZE bytes; vram_size / VGA_PAGE_SIZE bits,
 * in unsigned longs), both those written through the legacy window and
 * through the framebuffer BAR (KVM's dirty log).  Returns 0 or -errno. */
int vga_collect_dirty(struct vga *vga, unsigned long *bitmap);

#endif
