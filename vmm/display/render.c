// SPDX-License-Identifier: MIT
/*
 * Draws the VGA's picture: text through the font in plane 2 and the
 * attribute/DAC palettes, planar 16-colour and chain-4 256-colour
 * graphics, and VBE packed-pixel modes.  A line is redrawn when the
 * registers changed or one of the video memory pages it shows was written
 * (the device's dirty bits, which include KVM's dirty log of the
 * framebuffer); each redrawn line is compared with the old one so that
 * the changed rectangle stays tight.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/display/render.h"

/* the legacy modes live in the first 256 KiB (four 64 KiB planes) */
#define LEGACY_VRAM (256u * 1024)
#define BLANK_WIDTH 640
#define BLANK_HEIGHT 480

struct renderer {
	struct vga *vga;
	struct vga_scanout scanout; /* what the surface shows */
	bool drawn;
	uint32_t *pixels;
	unsigned width, height;
	uint32_t *line; /* one line being drawn */
	unsigned long *dirty;
	size_t dirty_words;
};

struct renderer *renderer_create(struct vga *vga)
{
	struct renderer *r = calloc(1, sizeof(*r));
	uint32_t vram_size;

	if (!r)
		return NULL;
	r->vga = vga;
	vga_vram(vga, &vram_size);
	r->dirty_words = (vram_size / VGA_PAGE_SIZE + 8 * sizeof(long) - 1) /
			 (8 * sizeof(long));
	r->dirty = calloc(r->dirty_words, sizeof(long));
	r->line = calloc(VGA_MAX_WIDTH, sizeof(uint32_t));
	if (!r->dirty || !r->line) {
		renderer_destroy(r);
		return NULL;
	}
	return r;
}

void renderer_destroy(struct renderer *r)
{
	if (!r)
		return;
	free(r->pixels);
	free(r->line);
	free(r->dirty);
	free(r);
}

const uint32_t *renderer_surface(const struct renderer *r, unsigned *width,
				 unsigned *height)
{
	*width = r->width;
	*height = r->height;
	return r->pixels;
}

const struct vga_scanout *renderer_scanout(const struct renderer *r)
{
	return &r->scanout;
}

static bool range_dirty(const struct renderer *r, uint64_t from, uint64_t len)
{
	uint64_t first = from / VGA_PAGE_SIZE;
	uint64_t last = (from + len - 1) / VGA_PAGE_SIZE;
	const unsigned bits = 8 * sizeof(long);

	if (!len)
		return false;
	for (uint64_t page = first; page <= last; page++) {
		if (page / bits >= r->dirty_words)
			return false;
		if (r->dirty[page / bits] & (1ul << (page % bits)))
			return true;
	}
	return false;
}

/* ---- one line of each kind -------------------------------------------*/

static void draw_text_line(const struct vga_scanout *s, const uint8_t *vram,
			   uint32_t vram_size, unsigned y, uint32_t *out)
{
	unsigned row = y / s->char_height, scan = y % s->char_height;
	unsigned x = 0;

	for (unsigned col = 0; col < s->cols; col++) {
		uint64_t cell = (uint64_t)s->start +
				(uint64_t)row * s->line_bytes + col * 4ull;
		uint8_t ch = 0, attr = 0, bits = 0;
		uint32_t fg, bg;
		bool ninth;

		if (cell + 1 < vram_size) {
			uint64_t glyph;

			ch = vram[cell];
			attr = vram[cell + 1];
			glyph = s->font_offset[(attr >> 3) & 1] +
				(uint64_t)ch * 32 * 4 + scan * 4ull;
			if (glyph < vram_size)
				bits = vram[glyph];
		}
		fg = render_pixel(s->palette[s->colour_map[attr & 0x0f]]);
		bg = render_pixel(
			s->palette[s->colour_map[s->blink ? (attr >> 4) & 7
							  : attr >> 4]]);
		if (s->cursor_visible && row == s->cursor_row &&
		    col == s->cursor_col && scan >= s->cursor_start &&
		    scan <= s->cursor_end)
			bits = 0xff;
		ninth = s->line_graphics && ch >= 0xb0 && ch <= 0xdf ? bits & 1
								     : false;
		for (unsigned b = 0; b < s->char_width; b++) {
			bool on = b < 8 ? bits & (0x80 >> b) : ninth;

			for (unsigned k = 0; k < s->pixel_repeat; k++)
				out[x++] = on ? fg : bg;
		}
	}
}

static void draw_planar_line(const struct vga_scanout *s, const uint8_t *vram,
			     uint32_t vram_size, unsigned y, uint32_t *out)
{
	uint64_t row = (uint64_t)s->start +
		       (uint64_t)(y / s->line_repeat) * s->line_bytes;

	for (unsigned x = 0; x < s->width; x += 8) {
		uint64_t at = row + (x / 8) * 4ull;
		uint8_t p[4] = { 0, 0, 0, 0 };

		if (at + 3 < vram_size)
			memcpy(p, &vram[at], 4);
		for (unsigned b = 0; b < 8 && x + b < s->width; b++) {
			unsigned shift = 7 - b;
			unsigned c = ((p[0] >> shift) & 1) |
				     ((p[1] >> shift) & 1) << 1 |
				     ((p[2] >> shift) & 1) << 2 |
				     ((p[3] >> shift) & 1) << 3;

			out[x + b] = render_pixel(s->palette[s->colour_map[c]]);
		}
	}
}

static void draw_chain4_line(const struct vga_scanout *s, const uint8_t *vram,
			     uint32_t vram_size, unsigned y, uint32_t *out)
{
	uint64_t row = (uint64_t)s->start +
		       (uint64_t)(y / s->line_repeat) * s->line_bytes;

	for (unsigned x = 0; x < s->width; x++) {
		uint64_t at = row + x / s->pixel_repeat;

		out[x] =
			render_pixel(s->palette[at < vram_size ? vram[at] : 0]);
	}
}

static void draw_linear_line(const struct vga_scanout *s, const uint8_t *vram,
			     uint32_t vram_size, unsigned y, uint32_t *out)
{
	unsigned bytes = (s->bpp + 7) / 8;
	uint64_t row = (uint64_t)s->start + (uint64_t)y * s->line_bytes;
	const uint8_t *p;

	if (row + (uint64_t)s->width * bytes > vram_size) {
		memset(out, 0, s->width * sizeof(*out));
		return;
	}
	p = vram + row;
	for (unsigned x = 0; x < s->width; x++, p += bytes) {
		uint32_t r, g, b, v;

		switch (s->bpp) {
		case 8:
			out[x] = render_pixel(s->palette[p[0]]);
			continue;
		case 15:
			v = p[0] | p[1] << 8;
			r = (v >> 10 & 0x1f) << 3;
			g = (v >> 5 & 0x1f) << 3;
			b = (v & 0x1f) << 3;
			r |= r >> 5;
			g |= g >> 5;
			b |= b >> 5;
			break;
		case 16:
			v = p[0] | p[1] << 8;
			r = (v >> 11 & 0x1f) << 3;
			g = (v >> 5 & 0x3f) << 2;
			b = (v & 0x1f) << 3;
			r |= r >> 5;
			g |= g >> 6;
			b |= b >> 5;
			break;
		default: /* 24 and 32: B, G, R in memory */
			b = p[0];
			g = p[1];
			r = p[2];
			break;
		}
		out[x] = r | g << 8 | b << 16;
	}
}

/* ---- the frame --------------------------------------------------------*/

static bool same_geometry(const struct vga_scanout *a,
			  const struct vga_scanout *b)
{
	return a->kind == b->kind && a->width == b->width &&
	       a->height == b->height && a->start == b->start &&
	       a->line_bytes == b->line_bytes && a->bpp == b->bpp &&
	       a->line_repeat == b->line_repeat;
}

static int resize(struct renderer *r, unsigned width, unsigned height)
{
	uint32_t *pixels = calloc((size_t)width * height, sizeof(uint32_t));

	if (!pixels)
		return -ENOMEM;
	free(r->pixels);
	r->pixels = pixels;
	r->width = width;
	r->height = height;
	return 0;
}

int renderer_update(struct renderer *r, bool *resized,
		    struct render_rect *changed)
{
	struct vga_scanout s;
	uint32_t vram_size;
	const uint8_t *vram = vga_vram(r->vga, &vram_size);
	unsigned width, height, min_x = ~0u, max_x = 0, min_y = ~0u, max_y = 0;
	bool everything;
	int ret;

	*resized = false;
	memset(changed, 0, sizeof(*changed));
	vga_get_scanout(r->vga, &s);
	ret = vga_collect_dirty(r->vga, r->dirty);
	if (ret)
		return ret;
	width = s.kind == VGA_SCANOUT_BLANK
			? (r->width ? r->width : BLANK_WIDTH)
			: s.width;
	height = s.kind == VGA_SCANOUT_BLANK
			 ? (r->height ? r->height : BLANK_HEIGHT)
			 : s.height;
	if (width != r->width || height != r->height) {
		ret = resize(r, width, height);
		if (ret)
			return ret;
		*resized = true;
	}
	everything = *resized || !r->drawn ||
		     s.generation != r->scanout.generation ||
		     !same_geometry(&s, &r->scanout) ||
		     (s.kind != VGA_SCANOUT_LINEAR &&
		      range_dirty(r, 0, LEGACY_VRAM));
	for (unsigned y = 0; y < height; y++) {
		uint32_t *line = r->pixels + (size_t)y * width;
		unsigned first, last;

		if (!everything) {
			if (s.kind != VGA_SCANOUT_LINEAR)
				break;
			if (!range_dirty(r,
					 (uint64_t)s.start +
						 (uint64_t)y * s.line_bytes,
					 (uint64_t)s.width * ((s.bpp + 7) / 8)))
				continue;
		}
		switch (s.kind) {
		case VGA_SCANOUT_TEXT:
			draw_text_line(&s, vram, vram_size, y, r->line);
			break;
		case VGA_SCANOUT_PLANAR4:
			draw_planar_line(&s, vram, vram_size, y, r->line);
			break;
		case VGA_SCANOUT_CHAIN4:
			draw_chain4_line(&s, vram, vram_size, y, r->line);
			break;
		case VGA_SCANOUT_LINEAR:
			draw_linear_line(&s, vram, vram_size, y, r->line);
			break;
		default:
			memset(r->line, 0, width * sizeof(uint32_t));
			break;
		}
		if (!*resized && !memcmp(line, r->line, width * sizeof(*line)))
			continue;
		for (first = 0; first < width && line[first] == r->line[first];
		     first++)
			;
		for (last = width;
		     last > first && line[last - 1] == r->line[last - 1];
		     last--)
			;
		if (*resized) {
			first = 0;
			last = width;
		}
		memcpy(line, r->line, width * sizeof(*line));
		if (first < min_x)
			min_x = first;
		if (last > max_x)
			max_x = last;
		if (y < min_y)
			min_y = y;
		max_y = y;
	}
	memset(r->dirty, 0, r->dirty_words * sizeof(long));
	r->scanout = s;
	r->drawn = true;
	if (min_y != ~0u) {
		changed->x = min_x;
		changed->y = min_y;
		changed->width = max_x - min_x;
		changed->height = max_y - min_y + 1;
	}
	return 0;
}
