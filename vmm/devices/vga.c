// SPDX-License-Identifier: MIT
/*
 * Standard VGA with the Bochs VBE "DISPI" interface, as QEMU's -vga std
 * and SeaBIOS's vgabios-stdvga.bin know it:
 *
 *  - PCI 1234:1111, class 0300; BAR0 the prefetchable linear framebuffer
 *    (all of video memory), BAR2 a 4 KiB MMIO block with the VGA ports
 *    0x3C0-0x3DF at +0x400, the DISPI registers at +0x500 and QEMU's
 *    extended registers at +0x600 (QEMU docs/specs/standard-vga.rst);
 *  - the legacy ports 0x3B0-0x3DF and the 0xA0000-0xBFFFF window, trapped
 *    as MMIO, with planes, latches, odd/even and chain-4 addressing and
 *    the four write modes (IBM VGA Technical Reference, "Graphics
 *    Controller Registers");
 *  - the DISPI index/data ports 0x1CE/0x1CF.
 *
 * Video memory keeps the four planes interleaved (byte n of plane p at
 * 4n+p), so that chain-4 and VBE modes see it as linear.  BAR0 is a KVM
 * memory slot over the same memory with dirty logging: the guest draws in
 * it without exits and the display asks which pages changed.  Every
 * access computed from guest-written registers is checked against the
 * size of video memory.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "vmm/devices/vga.h"
#include "vmm/machine.h"

#define VGA_VENDOR 0x1234
#define VGA_DEVICE 0x1111
#define VGA_MMIO_SIZE 0x1000
#define VGA_MMIO_PORTS 0x400
#define VGA_MMIO_DISPI 0x500
#define VGA_MMIO_QEXT 0x600
#define VGA_WINDOW_BASE 0xa0000
#define VGA_WINDOW_SIZE 0x20000
#define VGA_PORT_BASE 0x3b0
#define VGA_PORT_COUNT 0x30
#define DISPI_PORT 0x1ce
#define VGA_GUARD_SIZE (64u * 1024)
/* which device-memory region of the machine the framebuffer uses */
#define VGA_FB_REGION 0

/* DISPI registers (Bochs vbe.h) */
enum {
	DISPI_ID,
	DISPI_XRES,
	DISPI_YRES,
	DISPI_BPP,
	DISPI_ENABLE,
	DISPI_BANK,
	DISPI_VIRT_WIDTH,
	DISPI_VIRT_HEIGHT,
	DISPI_X_OFFSET,
	DISPI_Y_OFFSET,
	DISPI_VIDEO_MEMORY_64K,
	DISPI_COUNT,
};
#define DISPI_ID0 0xb0c0
#define DISPI_ID5 0xb0c5
#define DISPI_ENABLED 0x01
#define DISPI_GETCAPS 0x02
#define DISPI_8BIT_DAC 0x20
#define DISPI_LFB_ENABLED 0x40
#define DISPI_NOCLEARMEM 0x80

/* register indices */
#define SR_CLOCKING 0x01
#define SR_MAP_MASK 0x02
#define SR_CHARACTER_MAP 0x03
#define SR_MEMORY_MODE 0x04
#define SR04_ODD_EVEN_OFF 0x04
#define SR04_CHAIN4 0x08
#define GR_SET_RESET 0x00
#define GR_ENABLE_SET_RESET 0x01
#define GR_COLOUR_COMPARE 0x02
#define GR_DATA_ROTATE 0x03
#define GR_READ_MAP 0x04
#define GR_MODE 0x05
#define GR_MISC 0x06
#define GR_COLOUR_DONT_CARE 0x07
#define GR_BIT_MASK 0x08
#define GR05_ODD_EVEN 0x10
#define GR05_256_COLOUR 0x40
#define GR06_GRAPHICS 0x01
#define AR_MODE 0x10
#define AR_PLANE_ENABLE 0x12
#define AR_COLOUR_SELECT 0x14
#define AR_PALETTE_ENABLE 0x20 /* in the address register */
#define CR_HDISP_END 0x01
#define CR_OVERFLOW 0x07
#define CR_MAX_SCAN 0x09
#define CR_CURSOR_START 0x0a
#define CR_CURSOR_END 0x0b
#define CR_START_HI 0x0c
#define CR_START_LO 0x0d
#define CR_CURSOR_HI 0x0e
#define CR_CURSOR_LO 0x0f
#define CR_VRETRACE_END 0x11
#define CR_VDISP_END 0x12
#define CR_OFFSET 0x13
#define MISC_COLOUR 0x01

struct vga {
	struct vmm *vm;
	struct pci_device pci;
	pthread_mutex_t lock;

	uint8_t *vram;
	uint32_t vram_size;
	/* pages written through the window or the MMIO view of BAR0 */
	unsigned long *dirty;
	size_t dirty_words;
	bool fb_mapped;
	uint64_t fb_addr;

	uint8_t misc;
	uint8_t sr_index, sr[8];
	uint8_t gr_index, gr[16];
	uint8_t cr_index, cr[64];
	uint8_t ar_index, ar[32];
	bool ar_flip_flop; /* false: next 0x3C0 write is an index */
	uint8_t feature;
	uint8_t latch[4];
	uint8_t status_toggle;

	uint8_t dac[256][3];
	uint8_t dac_read_index, dac_write_index, dac_sub_index;
	bool dac_reading;
	uint8_t pel_mask;

	uint16_t dispi_index;
	uint16_t dispi[DISPI_COUNT];

	uint64_t generation;
};

/* ---- video memory ------------------------------------------------------*/

static void vga_mark_dirty(struct vga *vga, uint32_t offset)
{
	uint32_t page = offset / VGA_PAGE_SIZE;

	vga->dirty[page / (8 * sizeof(long))] |= 1ul
						 << (page % (8 * sizeof(long)));
}

/* The window offset of a legacy access, or -1 outside the mapped range
 * that GR6's memory map select names. */
static int64_t vga_window_offset(const struct vga *vga, uint64_t addr)
{
	switch ((vga->gr[GR_MISC] >> 2) & 3) {
	case 0:
		return addr;
	case 1:
		return addr < 0x10000 ? (int64_t)addr : -1;
	case 2:
		return addr >= 0x10000 && addr < 0x18000
			       ? (int64_t)(addr - 0x10000)
			       : -1;
	default:
		return addr >= 0x18000 ? (int64_t)(addr - 0x18000) : -1;
	}
}

static bool vga_dispi_enabled(const struct vga *vga)
{
	return vga->dispi[DISPI_ENABLE] & DISPI_ENABLED;
}

static uint8_t vga_rotate(uint8_t value, unsigned count)
{
	count &= 7;
	return (uint8_t)(value >> count | value << ((8 - count) & 7));
}

static uint8_t vga_window_read(struct vga *vga, uint64_t addr)
{
	int64_t off = vga_window_offset(vga, addr);
	uint32_t at;

	if (off < 0)
		return 0xff;
	if (vga_dispi_enabled(vga) && vga->dispi[DISPI_BPP] > 4) {
		/* banked VBE access: 64 KiB banks, linear */
		at = (uint32_t)vga->dispi[DISPI_BANK] * 0x10000u +
		     (uint32_t)(off & 0xffff);
		return at < vga->vram_size ? vga->vram[at] : 0xff;
	}
	if (vga->sr[SR_MEMORY_MODE] & SR04_CHAIN4)
		return vga->vram[off];
	if (vga->gr[GR_MODE] & GR05_ODD_EVEN) {
		unsigned plane = (vga->gr[GR_READ_MAP] & 2) | (off & 1);

		return vga->vram[((off & ~1) << 1) | plane];
	}
	memcpy(vga->latch, &vga->vram[off << 2], 4);
	if (!(vga->gr[GR_MODE] & 0x08))
		return vga->latch[vga->gr[GR_READ_MAP] & 3];
	{
		/* read mode 1: colour compare, one bit a pixel */
		uint8_t result = 0xff;

		for (unsigned p = 0; p < 4; p++) {
			if (!(vga->gr[GR_COLOUR_DONT_CARE] & (1u << p)))
				continue;
			result &= (vga->gr[GR_COLOUR_COMPARE] & (1u << p))
					  ? vga->latch[p]
					  : (uint8_t)~vga->latch[p];
		}
		return result;
	}
}

static void vga_window_write(struct vga *vga, uint64_t addr, uint8_t value)
{
	int64_t off = vga_window_offset(vga, addr);
	uint8_t map_mask, bit_mask, planes[4];
	unsigned mode;

	if (off < 0)
		return;
	if (vga_dispi_enabled(vga) && vga->dispi[DISPI_BPP] > 4) {
		uint32_t at = (uint32_t)vga->dispi[DISPI_BANK] * 0x10000u +
			      (uint32_t)(off & 0xffff);

		if (at < vga->vram_size) {
			vga->vram[at] = value;
			vga_mark_dirty(vga, at);
		}
		return;
	}
	map_mask = vga->sr[SR_MAP_MASK] & 0x0f;
	if (vga->sr[SR_MEMORY_MODE] & SR04_CHAIN4) {
		if (map_mask & (1u << (off & 3))) {
			vga->vram[off] = value;
			vga_mark_dirty(vga, off);
		}
		return;
	}
	if (!(vga->sr[SR_MEMORY_MODE] & SR04_ODD_EVEN_OFF)) {
		unsigned plane = (vga->gr[GR_READ_MAP] & 2) | (off & 1);
		uint32_t at = ((off & ~1) << 1) | plane;

		if (map_mask & (1u << plane)) {
			vga->vram[at] = value;
			vga_mark_dirty(vga, at);
		}
		return;
	}
	mode = vga->gr[GR_MODE] & 3;
	bit_mask = vga->gr[GR_BIT_MASK];
	for (unsigned p = 0; p < 4; p++) {
		uint8_t set = (vga->gr[GR_SET_RESET] & (1u << p)) ? 0xff : 0;

		switch (mode) {
		case 0:
			planes[p] =
				(vga->gr[GR_ENABLE_SET_RESET] & (1u << p))
					? set
					: vga_rotate(value,
						     vga->gr[GR_DATA_ROTATE]);
			break;
		case 1:
			planes[p] = vga->latch[p];
			break;
		case 2:
			planes[p] = (value & (1u << p)) ? 0xff : 0;
			break;
		default:
			planes[p] = set;
			break;
		}
	}
	if (mode == 3)
		bit_mask &= vga_rotate(value, vga->gr[GR_DATA_ROTATE]);
	if (mode != 1) {
		for (unsigned p = 0; p < 4; p++) {
			switch ((vga->gr[GR_DATA_ROTATE] >> 3) & 3) {
			case 1:
				planes[p] &= vga->latch[p];
				break;
			case 2:
				planes[p] |= vga->latch[p];
				break;
			case 3:
				planes[p] ^= vga->latch[p];
				break;
			}
			planes[p] = (planes[p] & bit_mask) |
				    (vga->latch[p] & ~bit_mask);
		}
	}
	for (unsigned p = 0; p < 4; p++)
		if (map_mask & (1u << p))
			vga->vram[(off << 2) | p] = planes[p];
	vga_mark_dirty(vga, off << 2);
}

static void vga_window_io(void *opaque, uint64_t addr, void *data,
			  unsigned size, bool is_write)
{
	struct vga *vga = opaque;
	uint8_t *bytes = data;

	pthread_mutex_lock(&vga->lock);
	for (unsigned i = 0; i < size; i++) {
		if (addr + i >= VGA_WINDOW_SIZE) {
			if (!is_write)
				bytes[i] = 0xff;
		} else if (is_write) {
			vga_window_write(vga, addr + i, bytes[i]);
		} else {
			bytes[i] = vga_window_read(vga, addr + i);
		}
	}
	pthread_mutex_unlock(&vga->lock);
}

/* BAR0 seen as MMIO: only when the framebuffer is not a memory slot (no
 * KVM), so that the same writes still reach video memory and its dirty
 * bits. */
static void vga_framebuffer_io(void *opaque, uint64_t addr, void *data,
			       unsigned size, bool is_write)
{
	struct vga *vga = opaque;

	if (addr >= vga->vram_size || size > vga->vram_size - addr) {
		if (!is_write)
			memset(data, 0xff, size);
		return;
	}
	pthread_mutex_lock(&vga->lock);
	if (is_write) {
		memcpy(vga->vram + addr, data, size);
		vga_mark_dirty(vga, addr);
		vga_mark_dirty(vga, addr + size - 1);
	} else {
		memcpy(data, vga->vram + addr, size);
	}
	pthread_mutex_unlock(&vga->lock);
}

/* ---- DISPI ----------------------------------------------------------*/

static unsigned vga_bytes_per_pixel(unsigned bpp)
{
	return (bpp + 7) / 8;
}

/* A mode is usable when it fits the limits and video memory. */
static bool vga_dispi_mode_fits(const struct vga *vga)
{
	unsigned bpp = vga->dispi[DISPI_BPP];
	unsigned xres = vga->dispi[DISPI_XRES], yres = vga->dispi[DISPI_YRES];

	if (bpp != 4 && bpp != 8 && bpp != 15 && bpp != 16 && bpp != 24 &&
	    bpp != 32)
		return false;
	/* planar lines are whole bytes of 8 pixels */
	if (!xres || !yres || xres > VGA_MAX_WIDTH || yres > VGA_MAX_HEIGHT ||
	    (bpp == 4 && xres % 8))
		return false;
	return (uint64_t)xres * yres * vga_bytes_per_pixel(bpp) <=
	       vga->vram_size;
}

/* The virtual screen follows from the width and offsets; the visible
 * part must stay inside video memory. */
static void vga_dispi_update_geometry(struct vga *vga)
{
	unsigned bpp = vga->dispi[DISPI_BPP];
	uint64_t line, lines;

	if (!vga_dispi_mode_fits(vga))
		return;
	if (vga->dispi[DISPI_VIRT_WIDTH] < vga->dispi[DISPI_XRES])
		vga->dispi[DISPI_VIRT_WIDTH] = vga->dispi[DISPI_XRES];
	line = bpp == 4 ? vga->dispi[DISPI_VIRT_WIDTH] / 2
			: (uint64_t)vga->dispi[DISPI_VIRT_WIDTH] *
				  vga_bytes_per_pixel(bpp);
	lines = vga->vram_size / line;
	if (lines < vga->dispi[DISPI_YRES]) {
		/* too wide for memory: fall back to the visible width */
		vga->dispi[DISPI_VIRT_WIDTH] = vga->dispi[DISPI_XRES];
		line = bpp == 4 ? vga->dispi[DISPI_XRES] / 2
				: (uint64_t)vga->dispi[DISPI_XRES] *
					  vga_bytes_per_pixel(bpp);
		lines = vga->vram_size / line;
	}
	vga->dispi[DISPI_VIRT_HEIGHT] = lines > 0xffff ? 0xffff : lines;
	if (vga->dispi[DISPI_X_OFFSET] + (uint64_t)vga->dispi[DISPI_XRES] >
	    vga->dispi[DISPI_VIRT_WIDTH])
		vga->dispi[DISPI_X_OFFSET] = 0;
	if (vga->dispi[DISPI_Y_OFFSET] + (uint64_t)vga->dispi[DISPI_YRES] >
	    lines)
		vga->dispi[DISPI_Y_OFFSET] = 0;
}

static uint16_t vga_dispi_read(struct vga *vga)
{
	unsigned index = vga->dispi_index;

	if (index >= DISPI_COUNT)
		return 0;
	if (vga->dispi[DISPI_ENABLE] & DISPI_GETCAPS) {
		switch (index) {
		case DISPI_XRES:
			return VGA_MAX_WIDTH;
		case DISPI_YRES:
			return VGA_MAX_HEIGHT;
		case DISPI_BPP:
			return 32;
		}
	}
	if (index == DISPI_VIDEO_MEMORY_64K)
		return vga->vram_size >> 16;
	return vga->dispi[index];
}

static void vga_dispi_write(struct vga *vga, uint16_t value)
{
	unsigned index = vga->dispi_index;

	switch (index) {
	case DISPI_ID:
		if (value >= DISPI_ID0 && value <= DISPI_ID5)
			vga->dispi[DISPI_ID] = value;
		break;
	case DISPI_XRES:
	case DISPI_YRES:
	case DISPI_BPP:
		/* the mode changes only while disabled */
		if (!vga_dispi_enabled(vga))
			vga->dispi[index] = value;
		break;
	case DISPI_BANK:
		if ((uint32_t)value * 0x10000u < vga->vram_size)
			vga->dispi[DISPI_BANK] = value;
		break;
	case DISPI_ENABLE:
		if ((value & DISPI_ENABLED) && !vga_dispi_enabled(vga)) {
			if (!vga_dispi_mode_fits(vga)) {
				/* keep the legacy mode: a rejected set mode */
				vga->dispi[DISPI_ENABLE] =
					value &
					~(DISPI_ENABLED | DISPI_LFB_ENABLED);
				break;
			}
			vga->dispi[DISPI_VIRT_WIDTH] = vga->dispi[DISPI_XRES];
			vga->dispi[DISPI_X_OFFSET] = 0;
			vga->dispi[DISPI_Y_OFFSET] = 0;
			vga->dispi[DISPI_BANK] = 0;
			vga_dispi_update_geometry(vga);
			if (!(value & DISPI_NOCLEARMEM)) {
				uint64_t used =
					(uint64_t)vga->dispi[DISPI_YRES] *
					vga->dispi[DISPI_VIRT_WIDTH] *
					vga_bytes_per_pixel(
						vga->dispi[DISPI_BPP]);

				memset(vga->vram, 0, used);
			}
			memset(vga->dirty, 0xff,
			       vga->dirty_words * sizeof(long));
		}
		vga->dispi[DISPI_ENABLE] = value;
		break;
	case DISPI_VIRT_WIDTH:
		vga->dispi[DISPI_VIRT_WIDTH] = value;
		vga->dispi[DISPI_X_OFFSET] = 0;
		vga->dispi[DISPI_Y_OFFSET] = 0;
		vga_dispi_update_geometry(vga);
		break;
	case DISPI_X_OFFSET:
	case DISPI_Y_OFFSET:
		vga->dispi[index] = value;
		vga_dispi_update_geometry(vga);
		break;
	default:
		/* VIRT_HEIGHT and the memory size are read-only */
		break;
	}
	vga->generation++;
}

/* ---- legacy ports -------------------------------------------------------*/

/* port: 0x3B0-0x3DF.  The CRTC and input status answer at 0x3Bx or 0x3Dx
 * as the misc output register's colour bit says. */
static bool vga_port_ignored(const struct vga *vga, unsigned port)
{
	if (port >= 0x3b0 && port < 0x3c0)
		return vga->misc & MISC_COLOUR;
	if (port >= 0x3d0)
		return !(vga->misc & MISC_COLOUR);
	return false;
}

static uint8_t vga_port_read(struct vga *vga, unsigned port)
{
	if (vga_port_ignored(vga, port))
		return 0xff;
	switch (port) {
	case 0x3c0:
		return vga->ar_index;
	case 0x3c1:
		return vga->ar[vga->ar_index & 0x1f];
	case 0x3c2:
		return 0x00; /* input status 0: no switch sense, no IRQ */
	case 0x3c4:
		return vga->sr_index;
	case 0x3c5:
		return vga->sr[vga->sr_index & 7];
	case 0x3c6:
		return vga->pel_mask;
	case 0x3c7:
		return vga->dac_reading ? 0x03 : 0x00;
	case 0x3c8:
		return vga->dac_write_index;
	case 0x3c9: {
		uint8_t v = vga->dac[vga->dac_read_index][vga->dac_sub_index];

		if (++vga->dac_sub_index == 3) {
			vga->dac_sub_index = 0;
			vga->dac_read_index++;
		}
		return v;
	}
	case 0x3ca:
		return vga->feature;
	case 0x3cc:
		return vga->misc;
	case 0x3ce:
		return vga->gr_index;
	case 0x3cf:
		return vga->gr[vga->gr_index & 0x0f];
	case 0x3b4:
	case 0x3d4:
		return vga->cr_index;
	case 0x3b5:
	case 0x3d5:
		return vga->cr[vga->cr_index & 0x3f];
	case 0x3ba:
	case 0x3da:
		/* display enable and vertical retrace toggle, so that loops
		 * waiting for either edge finish */
		vga->ar_flip_flop = false;
		vga->status_toggle ^= 0x09;
		return vga->status_toggle;
	}
	return 0xff;
}

static void vga_port_write(struct vga *vga, unsigned port, uint8_t value)
{
	if (vga_port_ignored(vga, port))
		return;
	switch (port) {
	case 0x3c0:
		if (!vga->ar_flip_flop) {
			vga->ar_index = value & 0x3f;
		} else {
			unsigned index = vga->ar_index & 0x1f;

			if (index < 0x15)
				vga->ar[index] = value;
		}
		vga->ar_flip_flop = !vga->ar_flip_flop;
		break;
	case 0x3c2:
		vga->misc = value;
		break;
	case 0x3c4:
		vga->sr_index = value;
		break;
	case 0x3c5:
		vga->sr[vga->sr_index & 7] = value;
		break;
	case 0x3c6:
		vga->pel_mask = value;
		break;
	case 0x3c7:
		vga->dac_read_index = value;
		vga->dac_sub_index = 0;
		vga->dac_reading = true;
		break;
	case 0x3c8:
		vga->dac_write_index = value;
		vga->dac_sub_index = 0;
		vga->dac_reading = false;
		break;
	case 0x3c9:
		vga->dac[vga->dac_write_index][vga->dac_sub_index] = value;
		if (++vga->dac_sub_index == 3) {
			vga->dac_sub_index = 0;
			vga->dac_write_index++;
		}
		break;
	case 0x3ce:
		vga->gr_index = value;
		break;
	case 0x3cf:
		vga->gr[vga->gr_index & 0x0f] = value;
		break;
	case 0x3b4:
	case 0x3d4:
		vga->cr_index = value;
		break;
	case 0x3b5:
	case 0x3d5: {
		unsigned index = vga->cr_index & 0x3f;

		/* CR11 bit 7 protects CR0-CR7, except CR7's line compare
		 * bit */
		if ((vga->cr[CR_VRETRACE_END] & 0x80) && index <= 7) {
			if (index == CR_OVERFLOW)
				vga->cr[7] = (vga->cr[7] & ~0x10) |
					     (value & 0x10);
			break;
		}
		vga->cr[index] = value;
		break;
	}
	case 0x3ba:
	case 0x3da:
		vga->feature = value;
		break;
	default:
		return;
	}
	vga->generation++;
}

static void vga_ports_io(void *opaque, uint64_t addr, void *data, unsigned size,
			 bool is_write)
{
	struct vga *vga = opaque;
	uint8_t *bytes = data;

	pthread_mutex_lock(&vga->lock);
	for (unsigned i = 0; i < size; i++) {
		unsigned port = VGA_PORT_BASE + addr + i;

		if (port >= VGA_PORT_BASE + VGA_PORT_COUNT) {
			if (!is_write)
				bytes[i] = 0xff;
		} else if (is_write) {
			vga_port_write(vga, port, bytes[i]);
		} else {
			bytes[i] = vga_port_read(vga, port);
		}
	}
	pthread_mutex_unlock(&vga->lock);
}

/* 0x1CE index, 0x1CF data (16-bit; a byte access reaches the low half) */
static void vga_dispi_io(void *opaque, uint64_t addr, void *data, unsigned size,
			 bool is_write)
{
	struct vga *vga = opaque;
	uint8_t *bytes = data;
	uint16_t value = size >= 2 ? (uint16_t)(bytes[0] | bytes[1] << 8)
				   : bytes[0];

	pthread_mutex_lock(&vga->lock);
	if (!is_write) {
		uint16_t v = addr == 0 ? vga->dispi_index : vga_dispi_read(vga);

		memset(data, 0, size);
		bytes[0] = v;
		if (size >= 2)
			bytes[1] = v >> 8;
	} else if (addr == 0) {
		vga->dispi_index = value;
	} else if (addr == 1 || addr == 2) {
		vga_dispi_write(vga, value);
	}
	pthread_mutex_unlock(&vga->lock);
}

/* BAR2: EDID (absent: zeros), VGA ports, DISPI, QEMU extended regs */
static void vga_mmio_io(void *opaque, uint64_t addr, void *data, unsigned size,
			bool is_write)
{
	struct vga *vga = opaque;
	uint8_t *bytes = data;

	if (addr >= VGA_MMIO_SIZE || size > VGA_MMIO_SIZE - addr) {
		if (!is_write)
			memset(data, 0xff, size);
		return;
	}
	if (addr >= VGA_MMIO_PORTS && addr + size <= VGA_MMIO_PORTS + 0x20) {
		vga_ports_io(vga, addr - VGA_MMIO_PORTS + 0x10, data, size,
			     is_write);
		return;
	}
	if (addr >= VGA_MMIO_DISPI &&
	    addr + size <= VGA_MMIO_DISPI + 2 * DISPI_COUNT) {
		unsigned index = (addr - VGA_MMIO_DISPI) / 2;

		pthread_mutex_lock(&vga->lock);
		vga->dispi_index = index;
		if (is_write && size >= 2 && !(addr & 1)) {
			vga_dispi_write(vga, bytes[0] | bytes[1] << 8);
		} else if (!is_write) {
			uint16_t v = vga_dispi_read(vga);

			memset(data, 0, size);
			bytes[0] = (addr & 1) ? v >> 8 : v;
			if (size >= 2 && !(addr & 1))
				bytes[1] = v >> 8;
		}
		pthread_mutex_unlock(&vga->lock);
		return;
	}
	if (!is_write) {
		uint32_t v = 0;

		memset(data, 0, size);
		if (addr == VGA_MMIO_QEXT)
			v = 8; /* size of the extended registers */
		else if (addr == VGA_MMIO_QEXT + 4)
			v = 0x1e1e1e1e; /* little-endian framebuffer */
		memcpy(data, &v, size < 4 ? size : 4);
	}
}

/* ---- PCI -----------------------------------------------------------*/

static void vga_bar_moved(struct pci_device *dev, unsigned bar, uint64_t addr,
			  bool mapped)
{
	struct vga *vga = dev->opaque;

	if (bar != 0)
		return;
	if (mapped) {
		if (vmm_map_device_memory(vga->vm, VGA_FB_REGION, addr,
					  vga->vram, vga->vram_size,
					  true) == 0) {
			vga->fb_mapped = true;
			vga->fb_addr = addr;
		}
	} else if (vga->fb_mapped) {
		vmm_map_device_memory(vga->vm, VGA_FB_REGION, 0, NULL, 0,
				      false);
		vga->fb_mapped = false;
	}
}

struct pci_device *vga_pci_device(struct vga *vga)
{
	return &vga->pci;
}

/* ---- scan-out description ------------------------------------------*/

/* QEMU widens 6-bit DAC values this way; screenshots compare with it */
static uint8_t vga_dac6_to_8(uint8_t v)
{
	v &= 0x3f;
	return (uint8_t)(v << 2 | (v & 1) << 1 | (v & 1));
}

static void vga_fill_palette(const struct vga *vga, struct vga_scanout *out)
{
	bool dac8 = vga_dispi_enabled(vga) &&
		    (vga->dispi[DISPI_ENABLE] & DISPI_8BIT_DAC);

	for (unsigned i = 0; i < 256; i++) {
		const uint8_t *c = vga->dac[i & vga->pel_mask];
		uint32_t r = dac8 ? c[0] : vga_dac6_to_8(c[0]);
		uint32_t g = dac8 ? c[1] : vga_dac6_to_8(c[1]);
		uint32_t b = dac8 ? c[2] : vga_dac6_to_8(c[2]);

		out->palette[i] = r << 16 | g << 8 | b;
	}
	for (unsigned i = 0; i < 16; i++) {
		uint8_t v = vga->ar[i & vga->ar[AR_PLANE_ENABLE] & 0x0f];

		if (vga->ar[AR_MODE] & 0x80)
			v = (v & 0x0f) | (vga->ar[AR_COLOUR_SELECT] & 0x03)
						 << 4;
		else
			v &= 0x3f;
		v |= (vga->ar[AR_COLOUR_SELECT] & 0x0c) << 4;
		out->colour_map[i] = v;
	}
}

static void vga_scanout_dispi(const struct vga *vga, struct vga_scanout *out)
{
	unsigned bpp = vga->dispi[DISPI_BPP];
	uint64_t start, line;

	if (!vga_dispi_mode_fits(vga)) {
		out->kind = VGA_SCANOUT_BLANK;
		return;
	}
	out->width = vga->dispi[DISPI_XRES];
	out->height = vga->dispi[DISPI_YRES];
	out->line_repeat = out->pixel_repeat = 1;
	if (bpp == 4) {
		/* planar: each line is virt_width / 8 bytes in each plane */
		out->kind = VGA_SCANOUT_PLANAR4;
		line = (uint64_t)vga->dispi[DISPI_VIRT_WIDTH] / 8 * 4;
		start = vga->dispi[DISPI_Y_OFFSET] * line +
			vga->dispi[DISPI_X_OFFSET] / 8 * 4;
	} else {
		out->kind = VGA_SCANOUT_LINEAR;
		out->bpp = bpp;
		line = (uint64_t)vga->dispi[DISPI_VIRT_WIDTH] *
		       vga_bytes_per_pixel(bpp);
		start = vga->dispi[DISPI_Y_OFFSET] * line +
			(uint64_t)vga->dispi[DISPI_X_OFFSET] *
				vga_bytes_per_pixel(bpp);
	}
	if (start >= vga->vram_size || line > vga->vram_size) {
		out->kind = VGA_SCANOUT_BLANK;
		return;
	}
	out->start = start;
	out->line_bytes = line;
}

static void vga_scanout_legacy(const struct vga *vga, struct vga_scanout *out)
{
	const uint8_t *cr = vga->cr;
	unsigned vde = cr[CR_VDISP_END] | (cr[CR_OVERFLOW] & 0x02) << 7 |
		       (cr[CR_OVERFLOW] & 0x40) << 3;
	unsigned char_clocks = cr[CR_HDISP_END] + 1;
	uint32_t start = (uint32_t)(cr[CR_START_HI] << 8 | cr[CR_START_LO]);

	/* screen off (SR1 bit 5) or the attribute controller not showing
	 * the palette: blank, as the real card */
	if ((vga->sr[SR_CLOCKING] & 0x20) ||
	    !(vga->ar_index & AR_PALETTE_ENABLE)) {
		out->kind = VGA_SCANOUT_BLANK;
		return;
	}
	out->start = start * 4;
	out->line_bytes = (uint32_t)cr[CR_OFFSET] * 8;
	if (!(vga->gr[GR_MISC] & GR06_GRAPHICS)) {
		unsigned cheight = (cr[CR_MAX_SCAN] & 0x1f) + 1;
		unsigned cursor =
			(unsigned)(cr[CR_CURSOR_HI] << 8 | cr[CR_CURSOR_LO]);
		uint8_t map = vga->sr[SR_CHARACTER_MAP];

		out->kind = VGA_SCANOUT_TEXT;
		out->char_width = (vga->sr[SR_CLOCKING] & 0x01) ? 8 : 9;
		out->pixel_repeat = (vga->sr[SR_CLOCKING] & 0x08) ? 2 : 1;
		out->char_height = cheight;
		out->cols = char_clocks;
		out->rows = (vde + 1) / cheight;
		out->width = out->cols * out->char_width * out->pixel_repeat;
		out->height = out->rows * cheight;
		/* attribute bit 3 clear: map B (SR3 bits 4,1,0); set: map A
		 * (bits 5,3,2); bits 4 and 5 select the odd 8 KiB */
		out->font_offset[0] =
			(((map >> 4) & 1) | ((map << 1) & 6)) * 8192 * 4 + 2;
		out->font_offset[1] =
			(((map >> 5) & 1) | ((map >> 1) & 6)) * 8192 * 4 + 2;
		out->line_graphics = vga->ar[AR_MODE] & 0x04;
		out->blink = vga->ar[AR_MODE] & 0x08;
		out->cursor_start = cr[CR_CURSOR_START] & 0x1f;
		out->cursor_end = cr[CR_CURSOR_END] & 0x1f;
		out->cursor_visible = !(cr[CR_CURSOR_START] & 0x20) &&
				      cursor >= start && cr[CR_OFFSET];
		if (out->cursor_visible) {
			unsigned at = cursor - start;
			unsigned per_row = (unsigned)cr[CR_OFFSET] * 2;

			out->cursor_row = at / per_row;
			out->cursor_col = at % per_row;
			out->cursor_visible = out->cursor_row < out->rows &&
					      out->cursor_col < out->cols;
		}
		return;
	}
	out->line_repeat = ((cr[CR_MAX_SCAN] & 0x1f) + 1)
			   << (cr[CR_MAX_SCAN] >> 7);
	out->height = vde + 1;
	if (vga->gr[GR_MODE] & GR05_256_COLOUR) {
		out->kind = VGA_SCANOUT_CHAIN4;
		out->width = char_clocks * 8;
		out->pixel_repeat = 2;
	} else if (vga->gr[GR_MODE] & 0x20) {
		/* CGA-style interleaved shift: not drawn */
		out->kind = VGA_SCANOUT_BLANK;
	} else {
		out->kind = VGA_SCANOUT_PLANAR4;
		out->width = char_clocks * 8;
		out->pixel_repeat = 1;
	}
}

void vga_get_scanout(struct vga *vga, struct vga_scanout *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&vga->lock);
	out->line_repeat = out->pixel_repeat = 1;
	if (vga_dispi_enabled(vga))
		vga_scanout_dispi(vga, out);
	else
		vga_scanout_legacy(vga, out);
	vga_fill_palette(vga, out);
	out->generation = vga->generation;
	pthread_mutex_unlock(&vga->lock);
	if (out->width > VGA_MAX_WIDTH || out->height > VGA_MAX_HEIGHT ||
	    !out->width || !out->height)
		out->kind = VGA_SCANOUT_BLANK;
}

const uint8_t *vga_vram(struct vga *vga, uint32_t *size)
{
	*size = vga->vram_size;
	return vga->vram;
}

int vga_collect_dirty(struct vga *vga, unsigned long *bitmap)
{
	int ret;

	pthread_mutex_lock(&vga->lock);
	for (size_t i = 0; i < vga->dirty_words; i++) {
		bitmap[i] |= vga->dirty[i];
		vga->dirty[i] = 0;
	}
	pthread_mutex_unlock(&vga->lock);
	ret = vmm_device_memory_dirty(vga->vm, VGA_FB_REGION, bitmap);
	return ret;
}

/* ---- lifecycle ------------------------------------------------------*/

static void vga_reset(void *opaque)
{
	struct vga *vga = opaque;

	pthread_mutex_lock(&vga->lock);
	vga->misc = 0;
	memset(vga->sr, 0, sizeof(vga->sr));
	memset(vga->gr, 0, sizeof(vga->gr));
	memset(vga->cr, 0, sizeof(vga->cr));
	memset(vga->ar, 0, sizeof(vga->ar));
	vga->sr_index = vga->gr_index = vga->cr_index = vga->ar_index = 0;
	vga->ar_flip_flop = false;
	vga->pel_mask = 0xff;
	vga->dac_read_index = vga->dac_write_index = vga->dac_sub_index = 0;
	vga->dac_reading = false;
	memset(vga->dispi, 0, sizeof(vga->dispi));
	vga->dispi[DISPI_ID] = DISPI_ID0;
	vga->dispi[DISPI_BPP] = 8;
	vga->dispi_index = 0;
	memset(vga->dirty, 0xff, vga->dirty_words * sizeof(long));
	vga->generation++;
	pthread_mutex_unlock(&vga->lock);
}

struct vga *vga_create(struct vmm *vm, unsigned slot, uint32_t vram_size,
		       char *err, size_t errlen)
{
	struct vga *vga;
	uint8_t *c;

	if (vram_size < VGA_VRAM_MIN || vram_size > VGA_VRAM_MAX ||
	    (vram_size & (vram_size - 1))) {
		snprintf(err, errlen,
			 "--vram must be a power of two from %u to %u MiB",
			 VGA_VRAM_MIN >> 20, VGA_VRAM_MAX >> 20);
		return NULL;
	}
	vga = calloc(1, sizeof(*vga));
	if (!vga)
		goto nomem;
	vga->vm = vm;
	pthread_mutex_init(&vga->lock, NULL);
	vga->vram_size = vram_size;
	/* inaccessible guard pages on both sides: an access computed past
	 * video memory faults instead of touching other memory */
	{
		uint8_t *area = mmap(
			NULL, vram_size + 2 * VGA_GUARD_SIZE, PROT_NONE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (area == MAP_FAILED)
			goto nomem;
		vga->vram = area + VGA_GUARD_SIZE;
		if (mprotect(vga->vram, vram_size, PROT_READ | PROT_WRITE)) {
			munmap(area, vram_size + 2 * VGA_GUARD_SIZE);
			vga->vram = NULL;
			goto nomem;
		}
	}
	vga->dirty_words = (vram_size / VGA_PAGE_SIZE + 8 * sizeof(long) - 1) /
			   (8 * sizeof(long));
	vga->dirty = calloc(vga->dirty_words, sizeof(long));
	if (!vga->dirty)
		goto nomem;

	c = vga->pci.config;
	c[0x00] = VGA_VENDOR & 0xff;
	c[0x01] = VGA_VENDOR >> 8;
	c[0x02] = VGA_DEVICE & 0xff;
	c[0x03] = VGA_DEVICE >> 8;
	c[0x08] = 0x02; /* revision, as QEMU's */
	c[0x0a] = 0x00; /* VGA-compatible display controller */
	c[0x0b] = 0x03;
	/* subsystem: QEMU's (1af4:1100), which guest drivers expect */
	c[0x2c] = 0xf4;
	c[0x2d] = 0x1a;
	c[0x2e] = 0x00;
	c[0x2f] = 0x11;
	c[0x10] = 0x08; /* BAR0: prefetchable 32-bit memory */
	vga->pci.bar_size[0] = vram_size;
	vga->pci.bar_io[0] = vga_framebuffer_io;
	vga->pci.bar_size[2] = VGA_MMIO_SIZE;
	vga->pci.bar_io[2] = vga_mmio_io;
	vga->pci.bar_moved = vga_bar_moved;
	vga->pci.opaque = vga;
	vga_reset(vga);
	if (pci_register_device(vm, &vga->pci, slot) ||
	    vmm_register_pio(vm, VGA_PORT_BASE, VGA_PORT_COUNT, vga_ports_io,
			     vga) ||
	    vmm_register_pio(vm, DISPI_PORT, 3, vga_dispi_io, vga) ||
	    vmm_register_mmio(vm, VGA_WINDOW_BASE, VGA_WINDOW_SIZE,
			      vga_window_io, vga)) {
		snprintf(err, errlen, "cannot register the VGA device");
		vga_destroy(vga);
		return NULL;
	}
	vmm_open_vga_window(vm);
	vmm_on_reset(vm, vga_reset, vga);
	return vga;
nomem:
	snprintf(err, errlen, "out of memory for %u MiB of video memory",
		 vram_size >> 20);
	vga_destroy(vga);
	return NULL;
}

void vga_destroy(struct vga *vga)
{
	if (!vga)
		return;
	if (vga->vram)
		munmap(vga->vram - VGA_GUARD_SIZE,
		       vga->vram_size + 2 * VGA_GUARD_SIZE);
	free(vga->dirty);
	pthread_mutex_destroy(&vga->lock);
	free(vga);
}
