/* SPDX-License-Identifier: MIT */
/*
 * VHD: the pure parts (no I/O): footer and header codec, checksum, CHS
 * geometry, sector bitmaps, UTF-16 names and parent locator paths.
 */
#include "vhd_ondisk.h"

#include "driver.h"

#include <stdio.h>
#include <string.h>

uint32_t vhd_checksum(const void *buf, size_t len, size_t skip)
{
	const uint8_t *p = buf;
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++)
		if (i < skip || i >= skip + 4)
			sum += p[i];
	return ~sum;
}

bool vhd_footer_decode(const void *raw, struct vhd_footer *f, bool *checksum_ok)
{
	const struct vhd_footer_disk *d = raw;

	if (memcmp(d->cookie, VHD_FOOTER_COOKIE, 8) != 0)
		return false;
	f->features = IMG_BE32(d->features);
	f->version = IMG_BE32(d->version);
	f->data_offset = IMG_BE64(d->data_offset);
	f->timestamp = IMG_BE32(d->timestamp);
	memcpy(f->creator_app, d->creator_app, 4);
	f->creator_version = IMG_BE32(d->creator_version);
	f->creator_host_os = IMG_BE32(d->creator_host_os);
	f->original_size = IMG_BE64(d->original_size);
	f->current_size = IMG_BE64(d->current_size);
	f->cylinders = IMG_BE16(d->cylinders);
	f->heads = d->heads;
	f->sectors_per_track = d->sectors_per_track;
	f->disk_type = IMG_BE32(d->disk_type);
	f->checksum = IMG_BE32(d->checksum);
	memcpy(f->uuid, d->uuid, 16);
	f->saved_state = d->saved_state;
	*checksum_ok = vhd_checksum(raw, VHD_FOOTER_SIZE,
				    offsetof(struct vhd_footer_disk,
					     checksum)) == f->checksum;
	return true;
}

void vhd_footer_encode(struct vhd_footer *f, void *raw)
{
	struct vhd_footer_disk *d = raw;

	memset(d, 0, sizeof(*d));
	memcpy(d->cookie, VHD_FOOTER_COOKIE, 8);
	d->features = IMG_BE32(f->features);
	d->version = IMG_BE32(f->version);
	d->data_offset = IMG_BE64(f->data_offset);
	d->timestamp = IMG_BE32(f->timestamp);
	memcpy(d->creator_app, f->creator_app, 4);
	d->creator_version = IMG_BE32(f->creator_version);
	d->creator_host_os = IMG_BE32(f->creator_host_os);
	d->original_size = IMG_BE64(f->original_size);
	d->current_size = IMG_BE64(f->current_size);
	d->cylinders = IMG_BE16(f->cylinders);
	d->heads = f->heads;
	d->sectors_per_track = f->sectors_per_track;
	d->disk_type = IMG_BE32(f->disk_type);
	memcpy(d->uuid, f->uuid, 16);
	d->saved_state = f->saved_state;
	f->checksum = vhd_checksum(raw, VHD_FOOTER_SIZE,
				   offsetof(struct vhd_footer_disk, checksum));
	d->checksum = IMG_BE32(f->checksum);
}

bool vhd_header_decode(const void *raw, struct vhd_header *h, bool *checksum_ok)
{
	const struct vhd_header_disk *d = raw;

	if (memcmp(d->cookie, VHD_HEADER_COOKIE, 8) != 0)
		return false;
	h->data_offset = IMG_BE64(d->data_offset);
	h->table_offset = IMG_BE64(d->table_offset);
	h->header_version = IMG_BE32(d->header_version);
	h->max_table_entries = IMG_BE32(d->max_table_entries);
	h->block_size = IMG_BE32(d->block_size);
	h->checksum = IMG_BE32(d->checksum);
	memcpy(h->parent_uuid, d->parent_uuid, 16);
	h->parent_timestamp = IMG_BE32(d->parent_timestamp);
	memcpy(h->parent_name, d->parent_name, sizeof(h->parent_name));
	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		const struct vhd_locator_disk *l = &d->locators[i];

		h->locators[i].platform_code = IMG_BE32(l->platform_code);
		h->locators[i].data_space = IMG_BE32(l->data_space);
		h->locators[i].data_length = IMG_BE32(l->data_length);
		h->locators[i].data_offset = IMG_BE64(l->data_offset);
	}
	*checksum_ok = vhd_checksum(raw, VHD_HEADER_SIZE,
				    offsetof(struct vhd_header_disk,
					     checksum)) == h->checksum;
	return true;
}

void vhd_header_encode(struct vhd_header *h, void *raw)
{
	struct vhd_header_disk *d = raw;

	memset(d, 0, sizeof(*d));
	memcpy(d->cookie, VHD_HEADER_COOKIE, 8);
	d->data_offset = IMG_BE64(h->data_offset);
	d->table_offset = IMG_BE64(h->table_offset);
	d->header_version = IMG_BE32(h->header_version);
	d->max_table_entries = IMG_BE32(h->max_table_entries);
	d->block_size = IMG_BE32(h->block_size);
	memcpy(d->parent_uuid, h->parent_uuid, 16);
	d->parent_timestamp = IMG_BE32(h->parent_timestamp);
	memcpy(d->parent_name, h->parent_name, sizeof(d->parent_name));
	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		struct vhd_locator_disk *l = &d->locators[i];

		l->platform_code = IMG_BE32(h->locators[i].platform_code);
		l->data_space = IMG_BE32(h->locators[i].data_space);
		l->data_length = IMG_BE32(h->locators[i].data_length);
		l->data_offset = IMG_BE64(h->locators[i].data_offset);
	}
	h->checksum = vhd_checksum(raw, VHD_HEADER_SIZE,
				   offsetof(struct vhd_header_disk, checksum));
	d->checksum = IMG_BE32(h->checksum);
}

struct vhd_geometry vhd_geometry_for(uint64_t sectors)
{
	uint64_t cylinders_times_heads;
	uint32_t heads, per_track;

	if (sectors > VHD_MAX_CHS_SECTORS)
		sectors = VHD_MAX_CHS_SECTORS;
	if (sectors >= 65535ull * 16 * 63) {
		per_track = 255;
		heads = 16;
		cylinders_times_heads = sectors / per_track;
	} else {
		per_track = 17;
		cylinders_times_heads = sectors / per_track;
		heads = (cylinders_times_heads + 1023) / 1024;
		if (heads < 4)
			heads = 4;
		if (cylinders_times_heads >= heads * 1024ull || heads > 16) {
			per_track = 31;
			heads = 16;
			cylinders_times_heads = sectors / per_track;
		}
		if (cylinders_times_heads >= heads * 1024ull) {
			per_track = 63;
			heads = 16;
			cylinders_times_heads = sectors / per_track;
		}
	}
	return (struct vhd_geometry){
		.cylinders = (uint16_t)(cylinders_times_heads / heads),
		.heads = (uint8_t)heads,
		.sectors_per_track = (uint8_t)per_track,
	};
}

uint64_t vhd_geometry_sectors(struct vhd_geometry g)
{
	return (uint64_t)g.cylinders * g.heads * g.sectors_per_track;
}

uint64_t vhd_geometry_round_up(uint64_t sectors)
{
	/* The geometry of n sectors never exceeds n and grows by at most
	 * one track-cylinder (16 * 255 sectors) at a time, so a short walk
	 * up finds the first geometry covering the request. */
	if (sectors >= VHD_MAX_CHS_SECTORS)
		return sectors;
	for (uint64_t n = sectors;; n++) {
		uint64_t chs = vhd_geometry_sectors(vhd_geometry_for(n));

		if (chs >= sectors)
			return chs;
		if (n >= VHD_MAX_CHS_SECTORS)
			return sectors;
	}
}

void vhd_bitmap_set(uint8_t *bitmap, uint32_t first, uint32_t count)
{
	uint32_t s = first, end = first + count;

	while (s < end && (s & 7))
		bitmap[s >> 3] |= 0x80u >> (s & 7), s++;
	if (end - s >= 8) {
		memset(bitmap + (s >> 3), 0xff, (end - s) >> 3);
		s += (end - s) & ~7u;
	}
	while (s < end)
		bitmap[s >> 3] |= 0x80u >> (s & 7), s++;
}

uint32_t vhd_bitmap_run(const uint8_t *bitmap, uint32_t first, uint32_t max,
			bool *set)
{
	bool want = vhd_bitmap_test(bitmap, first);
	uint32_t n = 1;

	*set = want;
	while (n < max) {
		uint32_t s = first + n;

		/* Whole bytes at a time when aligned. */
		if (!(s & 7) && max - n >= 8 &&
		    bitmap[s >> 3] == (want ? 0xff : 0x00)) {
			n += 8;
			continue;
		}
		if (vhd_bitmap_test(bitmap, s) != want)
			break;
		n++;
	}
	return n;
}

bool vhd_bitmap_all_set(const uint8_t *bitmap, uint32_t first, uint32_t count)
{
	bool set;

	if (!count)
		return true;
	return vhd_bitmap_run(bitmap, first, count, &set) == count && set;
}

static int utf16_put(uint8_t *out, size_t out_max, size_t *pos, uint16_t unit,
		     bool big_endian)
{
	if (*pos + 2 > out_max)
		return -ENAMETOOLONG;
	out[(*pos)++] = big_endian ? unit >> 8 : unit & 0xff;
	out[(*pos)++] = big_endian ? unit & 0xff : unit >> 8;
	return 0;
}

int vhd_utf8_to_utf16(const char *in, uint8_t *out, size_t out_max,
		      bool big_endian)
{
	const uint8_t *p = (const uint8_t *)in;
	size_t pos = 0;
	int ret;

	while (*p) {
		uint32_t cp;
		int extra;

		if (*p < 0x80)
			cp = *p, extra = 0;
		else if ((*p & 0xe0) == 0xc0)
			cp = *p & 0x1f, extra = 1;
		else if ((*p & 0xf0) == 0xe0)
			cp = *p & 0x0f, extra = 2;
		else if ((*p & 0xf8) == 0xf0)
			cp = *p & 0x07, extra = 3;
		else
			return -EINVAL;
		p++;
		for (int i = 0; i < extra; i++, p++) {
			if ((*p & 0xc0) != 0x80)
				return -EINVAL;
			cp = cp << 6 | (*p & 0x3f);
		}
		if (cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
			return -EINVAL;
		if (cp >= 0x10000) {
			cp -= 0x10000;
			ret = utf16_put(out, out_max, &pos, 0xd800 | (cp >> 10),
					big_endian);
			if (!ret)
				ret = utf16_put(out, out_max, &pos,
						0xdc00 | (cp & 0x3ff),
						big_endian);
		} else {
			ret = utf16_put(out, out_max, &pos, (uint16_t)cp,
					big_endian);
		}
		if (ret)
			return ret;
	}
	return (int)pos;
}

int vhd_utf16_to_utf8(const uint8_t *in, size_t in_len, bool big_endian,
		      char *out, size_t out_max)
{
	size_t pos = 0;

	if (!out_max)
		return -ENAMETOOLONG;
	for (size_t i = 0; i + 1 < in_len; i += 2) {
		uint32_t cp = big_endian ? (in[i] << 8 | in[i + 1])
					 : (in[i + 1] << 8 | in[i]);
		uint8_t enc[4];
		size_t n;

		if (!cp)
			break;
		if (cp >= 0xd800 && cp < 0xdc00) {
			uint32_t low;

			if (i + 3 >= in_len)
				return -EINVAL;
			low = big_endian ? (in[i + 2] << 8 | in[i + 3])
					 : (in[i + 3] << 8 | in[i + 2]);
			if (low < 0xdc00 || low >= 0xe000)
				return -EINVAL;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
			i += 2;
		} else if (cp >= 0xdc00 && cp < 0xe000) {
			return -EINVAL;
		}
		if (cp < 0x80) {
			enc[0] = (uint8_t)cp, n = 1;
		} else if (cp < 0x800) {
			enc[0] = 0xc0 | cp >> 6;
			enc[1] = 0x80 | (cp & 0x3f), n = 2;
		} else if (cp < 0x10000) {
			enc[0] = 0xe0 | cp >> 12;
			enc[1] = 0x80 | ((cp >> 6) & 0x3f);
			enc[2] = 0x80 | (cp & 0x3f), n = 3;
		} else {
			enc[0] = 0xf0 | cp >> 18;
			enc[1] = 0x80 | ((cp >> 12) & 0x3f);
			enc[2] = 0x80 | ((cp >> 6) & 0x3f);
			enc[3] = 0x80 | (cp & 0x3f), n = 4;
		}
		if (pos + n + 1 > out_max)
			return -ENAMETOOLONG;
		memcpy(out + pos, enc, n);
		pos += n;
	}
	out[pos] = '\0';
	return 0;
}

static void copy_string(char *out, size_t out_max, const char *in)
{
	size_t n = strlen(in);

	if (!out_max)
		return;
	if (n >= out_max)
		n = out_max - 1;
	memmove(out, in, n);
	out[n] = '\0';
}

bool vhd_windows_path_to_host(const char *in, char *out, size_t out_max)
{
	char *p, *base;

	copy_string(out, out_max, in);
	for (p = out; *p; p++)
		if (*p == '\\')
			*p = '/';
	if (!strncmp(out, "//?/", 4))
		memmove(out, out + 4, strlen(out + 4) + 1);
	if (((out[0] >= 'A' && out[0] <= 'Z') ||
	     (out[0] >= 'a' && out[0] <= 'z')) &&
	    out[1] == ':') {
		base = strrchr(out, '/');
		base = base ? base + 1 : out + 2;
		memmove(out, base, strlen(base) + 1);
		return false;
	}
	while (!strncmp(out, "./", 2))
		memmove(out, out + 2, strlen(out + 2) + 1);
	return out[0] != '\0';
}

int vhd_url_to_path(const char *url, char *out, size_t out_max)
{
	const char *p = url;
	size_t pos = 0;

	if (!strncmp(p, "file://", 7)) {
		p += 7;
		/* "file://localhost/x" and "file:///x" */
		if (!strncmp(p, "localhost/", 10))
			p += 9;
	}
	for (; *p; p++) {
		char c = *p;

		if (c == '%') {
			int hi = img_hex_digit(p[1]),
			    lo = hi < 0 ? -1 : img_hex_digit(p[2]);

			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi << 4 | lo);
			p += 2;
		}
		if (!c || pos + 1 >= out_max)
			return c ? -ENAMETOOLONG : -EINVAL;
		out[pos++] = c;
	}
	if (!out_max)
		return -ENAMETOOLONG;
	out[pos] = '\0';
	return 0;
}

int vhd_path_to_url(const char *path, char *out, size_t out_max)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t pos = 0;
	int n = snprintf(out, out_max, "file://");

	if (n < 0 || (size_t)n >= out_max)
		return -ENAMETOOLONG;
	pos = (size_t)n;
	for (const uint8_t *p = (const uint8_t *)path; *p; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') ||
			     (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9') || strchr("/-._~", *p);

		if (pos + (plain ? 1 : 3) + 1 > out_max)
			return -ENAMETOOLONG;
		if (plain) {
			out[pos++] = (char)*p;
		} else {
			out[pos++] = '%';
			out[pos++] = hex[*p >> 4];
			out[pos++] = hex[*p & 15];
		}
	}
	out[pos] = '\0';
	return 0;
}

void vhd_host_path_to_windows(const char *in, char *out, size_t out_max)
{
	copy_string(out, out_max, in);
	for (char *p = out; *p; p++)
		if (*p == '/')
			*p = '\\';
}

uint32_t vhd_timestamp_from_unix(int64_t unix_seconds)
{
	if (unix_seconds < VHD_EPOCH_OFFSET)
		return 0;
	if (unix_seconds - VHD_EPOCH_OFFSET > UINT32_MAX)
		return UINT32_MAX;
	return (uint32_t)(unix_seconds - VHD_EPOCH_OFFSET);
}
