/* SPDX-License-Identifier: MIT */
/* VHDX: CRC-32C, GUIDs and the encode/decode of on-disk structures. */
#include "vhdx_ondisk.h"

#include "driver.h"

#include <stdio.h>
#include <string.h>

const struct vhdx_guid vhdx_guid_bat =
	VHDX_GUID_INIT(0x2dc27766, 0xf623, 0x4200, 0x9d, 0x64, 0x11, 0x5e, 0x9b,
		       0xfd, 0x4a, 0x08);
const struct vhdx_guid vhdx_guid_metadata =
	VHDX_GUID_INIT(0x8b7ca206, 0x4790, 0x4b9a, 0xb8, 0xfe, 0x57, 0x5f, 0x05,
		       0x0f, 0x88, 0x6e);
const struct vhdx_guid vhdx_guid_file_parameters =
	VHDX_GUID_INIT(0xcaa16737, 0xfa36, 0x4d43, 0xb3, 0xb6, 0x33, 0xf0, 0xaa,
		       0x44, 0xe7, 0x6b);
const struct vhdx_guid vhdx_guid_virtual_disk_size =
	VHDX_GUID_INIT(0x2fa54224, 0xcd1b, 0x4876, 0xb2, 0x11, 0x5d, 0xbe, 0xd8,
		       0x3b, 0xf4, 0xb8);
const struct vhdx_guid vhdx_guid_page83 =
	VHDX_GUID_INIT(0xbeca12ab, 0xb2e6, 0x4523, 0x93, 0xef, 0xc3, 0x09, 0xe0,
		       0x00, 0xc7, 0x46);
const struct vhdx_guid vhdx_guid_logical_sector_size =
	VHDX_GUID_INIT(0x8141bf1d, 0xa96f, 0x4709, 0xba, 0x47, 0xf2, 0x33, 0xa8,
		       0xfa, 0xab, 0x5f);
const struct vhdx_guid vhdx_guid_physical_sector_size =
	VHDX_GUID_INIT(0xcda348c7, 0x445d, 0x4471, 0x9c, 0xc9, 0xe9, 0x88, 0x52,
		       0x51, 0xc5, 0x56);
const struct vhdx_guid vhdx_guid_parent_locator =
	VHDX_GUID_INIT(0xa8d35f2d, 0xb30b, 0x454d, 0xab, 0xf7, 0xd3, 0xd8, 0x48,
		       0x34, 0xab, 0x0c);
const struct vhdx_guid vhdx_guid_parent_locator_type =
	VHDX_GUID_INIT(0xb04aefb7, 0xd19e, 0x4a81, 0xb7, 0x89, 0x25, 0xb8, 0xe9,
		       0x44, 0x59, 0x13);

/* ---- CRC-32C (Castagnoli, reflected polynomial 0x82f63b78) ------------*/

static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc32c_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc32c_table[t][i] =
				(crc32c_table[t - 1][i] >> 8) ^
				crc32c_table[0][crc32c_table[t - 1][i] & 0xff];
}

/* Slicing-by-8: the metadata this covers is small, but the log and the
 * region tables are checksummed in 64 KiB and 1 MiB pieces. */
uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc32c_once, crc32c_init);
	crc = ~crc;
	while (len >= 8) {
		uint32_t lo = crc ^
			      ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
			       (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		crc = crc32c_table[7][lo & 0xff] ^
		      crc32c_table[6][(lo >> 8) & 0xff] ^
		      crc32c_table[5][(lo >> 16) & 0xff] ^
		      crc32c_table[4][lo >> 24] ^ crc32c_table[3][p[4]] ^
		      crc32c_table[2][p[5]] ^ crc32c_table[1][p[6]] ^
		      crc32c_table[0][p[7]];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc32c_table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
	static const uint8_t zero[4];
	uint32_t crc = vhdx_crc32c(0, buf, csum_off);

	crc = vhdx_crc32c(crc, zero, 4);
	return vhdx_crc32c(crc, buf + csum_off + 4, len - csum_off - 4);
}

void vhdx_checksum_set(uint8_t *buf, size_t len, size_t csum_off)
{
	vhdx_put32(buf + csum_off, vhdx_checksum(buf, len, csum_off));
}

bool vhdx_checksum_ok(const uint8_t *buf, size_t len, size_t csum_off)
{
	return vhdx_get32(buf + csum_off) == vhdx_checksum(buf, len, csum_off);
}

/* ---- little-endian fields ----------------------------------------------*/

uint16_t vhdx_get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return IMG_LE16(v);
}

uint32_t vhdx_get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return IMG_LE32(v);
}

uint64_t vhdx_get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return IMG_LE64(v);
}

void vhdx_put16(uint8_t *p, uint16_t v)
{
	v = IMG_LE16(v);
	memcpy(p, &v, 2);
}

void vhdx_put32(uint8_t *p, uint32_t v)
{
	v = IMG_LE32(v);
	memcpy(p, &v, 4);
}

void vhdx_put64(uint8_t *p, uint64_t v)
{
	v = IMG_LE64(v);
	memcpy(p, &v, 8);
}

/* ---- GUIDs ---------------------------------------------------------------*/

bool vhdx_guid_equal(const struct vhdx_guid *a, const struct vhdx_guid *b)
{
	return !memcmp(a->b, b->b, 16);
}

bool vhdx_guid_is_zero(const struct vhdx_guid *g)
{
	static const struct vhdx_guid zero;

	return vhdx_guid_equal(g, &zero);
}

void vhdx_guid_generate(struct vhdx_guid *g)
{
	img_random_bytes(g->b, 16);
	g->b[7] = (uint8_t)((g->b[7] & 0x0f) | 0x40); /* version 4 */
	g->b[8] = (uint8_t)((g->b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

void vhdx_guid_format(const struct vhdx_guid *g, char out[39], bool braces)
{
	const uint8_t *b = g->b;

	snprintf(out, 39,
		 "%s%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x%s",
		 braces ? "{" : "", vhdx_get32(b), vhdx_get16(b + 4),
		 vhdx_get16(b + 6), b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15], braces ? "}" : "");
}

bool vhdx_guid_parse(const char *text, struct vhdx_guid *g)
{
	uint8_t raw[16];
	size_t len = strlen(text);
	int n = 0;

	if (len == 38 && text[0] == '{' && text[37] == '}') {
		text++;
		len = 36;
	}
	if (len != 36)
		return false;
	for (size_t i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (text[i] != '-')
				return false;
			continue;
		}
		int hi = img_hex_digit(text[i]),
		    lo = img_hex_digit(text[i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		raw[n++] = (uint8_t)(hi << 4 | lo);
		i++;
	}
	/* raw is the text order; the first three groups go little-endian. */
	g->b[0] = raw[3];
	g->b[1] = raw[2];
	g->b[2] = raw[1];
	g->b[3] = raw[0];
	g->b[4] = raw[5];
	g->b[5] = raw[4];
	g->b[6] = raw[7];
	g->b[7] = raw[6];
	memcpy(g->b + 8, raw + 8, 8);
	return true;
}

/* ---- header ------------------------------------------------------------*/

void vhdx_header_decode(const uint8_t *buf, struct vhdx_header *h)
{
	h->signature = vhdx_get32(buf);
	h->checksum = vhdx_get32(buf + 4);
	h->sequence = vhdx_get64(buf + 8);
	memcpy(h->file_write_guid.b, buf + 16, 16);
	memcpy(h->data_write_guid.b, buf + 32, 16);
	memcpy(h->log_guid.b, buf + 48, 16);
	h->log_version = vhdx_get16(buf + 64);
	h->version = vhdx_get16(buf + 66);
	h->log_length = vhdx_get32(buf + 68);
	h->log_offset = vhdx_get64(buf + 72);
}

void vhdx_header_encode(const struct vhdx_header *h, uint8_t *buf)
{
	memset(buf, 0, VHDX_HEADER_SIZE);
	vhdx_put32(buf, VHDX_HEADER_SIGNATURE);
	vhdx_put64(buf + 8, h->sequence);
	memcpy(buf + 16, h->file_write_guid.b, 16);
	memcpy(buf + 32, h->data_write_guid.b, 16);
	memcpy(buf + 48, h->log_guid.b, 16);
	vhdx_put16(buf + 64, h->log_version);
	vhdx_put16(buf + 66, h->version);
	vhdx_put32(buf + 68, h->log_length);
	vhdx_put64(buf + 72, h->log_offset);
	vhdx_checksum_set(buf, VHDX_HEADER_SIZE, 4);
}

/* ---- region table --------------------------------------------------------*/

uint32_t vhdx_region_count(const uint8_t *buf)
{
	return vhdx_get32(buf + 8);
}

void vhdx_region_decode(const uint8_t *buf, uint32_t i, struct vhdx_region *r)
{
	const uint8_t *p = buf + 16 + (size_t)i * 32;

	memcpy(r->guid.b, p, 16);
	r->offset = vhdx_get64(p + 16);
	r->length = vhdx_get32(p + 24);
	r->required = vhdx_get32(p + 28) & 1;
}

void vhdx_region_table_encode(const struct vhdx_region *r, uint32_t n,
			      uint8_t *buf)
{
	memset(buf, 0, VHDX_REGION_TABLE_SIZE);
	vhdx_put32(buf, VHDX_REGION_SIGNATURE);
	vhdx_put32(buf + 8, n);
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *p = buf + 16 + (size_t)i * 32;

		memcpy(p, r[i].guid.b, 16);
		vhdx_put64(p + 16, r[i].offset);
		vhdx_put32(p + 24, r[i].length);
		vhdx_put32(p + 28, r[i].required ? 1 : 0);
	}
	vhdx_checksum_set(buf, VHDX_REGION_TABLE_SIZE, 4);
}

/* ---- metadata table ------------------------------------------------------*/

uint32_t vhdx_metadata_count(const uint8_t *buf)
{
	return vhdx_get16(buf + 10);
}

void vhdx_metadata_decode(const uint8_t *buf, uint32_t i,
			  struct vhdx_metadata_entry *e)
{
	const uint8_t *p = buf + 32 + (size_t)i * 32;

	memcpy(e->item.b, p, 16);
	e->offset = vhdx_get32(p + 16);
	e->length = vhdx_get32(p + 20);
	e->flags = vhdx_get32(p + 24);
}

void vhdx_metadata_table_encode(const struct vhdx_metadata_entry *e, uint32_t n,
				uint8_t *buf)
{
	memset(buf, 0, VHDX_METADATA_TABLE_SIZE);
	memcpy(buf, VHDX_METADATA_SIGNATURE, 8);
	vhdx_put16(buf + 10, (uint16_t)n);
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *p = buf + 32 + (size_t)i * 32;

		memcpy(p, e[i].item.b, 16);
		vhdx_put32(p + 16, e[i].offset);
		vhdx_put32(p + 20, e[i].length);
		vhdx_put32(p + 24, e[i].flags);
	}
}

/* ---- log -------------------------------------------------------------*/

void vhdx_log_header_decode(const uint8_t *buf, struct vhdx_log_header *h)
{
	h->signature = vhdx_get32(buf);
	h->checksum = vhdx_get32(buf + 4);
	h->entry_length = vhdx_get32(buf + 8);
	h->tail = vhdx_get32(buf + 12);
	h->sequence = vhdx_get64(buf + 16);
	h->descriptor_count = vhdx_get32(buf + 24);
	memcpy(h->log_guid.b, buf + 32, 16);
	h->flushed_file_offset = vhdx_get64(buf + 48);
	h->last_file_offset = vhdx_get64(buf + 56);
}

void vhdx_log_header_encode(const struct vhdx_log_header *h, uint8_t *buf)
{
	memset(buf, 0, VHDX_LOG_HEADER_SIZE);
	vhdx_put32(buf, VHDX_LOG_ENTRY_SIGNATURE);
	vhdx_put32(buf + 4, h->checksum);
	vhdx_put32(buf + 8, h->entry_length);
	vhdx_put32(buf + 12, h->tail);
	vhdx_put64(buf + 16, h->sequence);
	vhdx_put32(buf + 24, h->descriptor_count);
	memcpy(buf + 32, h->log_guid.b, 16);
	vhdx_put64(buf + 48, h->flushed_file_offset);
	vhdx_put64(buf + 56, h->last_file_offset);
}

void vhdx_log_descriptor_decode(const uint8_t *buf,
				struct vhdx_log_descriptor *d)
{
	d->signature = vhdx_get32(buf);
	d->trailing = vhdx_get32(buf + 4);
	d->leading_or_length = vhdx_get64(buf + 8);
	d->file_offset = vhdx_get64(buf + 16);
	d->sequence = vhdx_get64(buf + 24);
}

void vhdx_log_descriptor_encode(const struct vhdx_log_descriptor *d,
				uint8_t *buf)
{
	vhdx_put32(buf, d->signature);
	vhdx_put32(buf + 4, d->trailing);
	vhdx_put64(buf + 8, d->leading_or_length);
	vhdx_put64(buf + 16, d->file_offset);
	vhdx_put64(buf + 24, d->sequence);
}

uint32_t vhdx_log_descriptor_sectors(uint32_t n)
{
	uint64_t bytes =
		VHDX_LOG_HEADER_SIZE + (uint64_t)n * VHDX_LOG_DESCRIPTOR_SIZE;

	return (uint32_t)((bytes + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR);
}

/* ---- UTF-16 ------------------------------------------------------------*/

int vhdx_utf16_to_utf8(const uint8_t *in, size_t in_bytes, char *out,
		       size_t out_max)
{
	size_t o = 0;

	for (size_t i = 0; i + 1 < in_bytes; i += 2) {
		uint32_t c = vhdx_get16(in + i);

		if (c >= 0xd800 && c < 0xdc00) {
			if (i + 3 >= in_bytes)
				return -1;
			uint32_t lo = vhdx_get16(in + i + 2);

			if (lo < 0xdc00 || lo >= 0xe000)
				return -1;
			c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
			i += 2;
		} else if (c >= 0xdc00 && c < 0xe000) {
			return -1;
		}
		if (c == 0)
			return -1;
		uint8_t enc[4];
		int n;

		if (c < 0x80) {
			enc[0] = (uint8_t)c;
			n = 1;
		} else if (c < 0x800) {
			enc[0] = (uint8_t)(0xc0 | c >> 6);
			enc[1] = (uint8_t)(0x80 | (c & 0x3f));
			n = 2;
		} else if (c < 0x10000) {
			enc[0] = (uint8_t)(0xe0 | c >> 12);
			enc[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
			enc[2] = (uint8_t)(0x80 | (c & 0x3f));
			n = 3;
		} else {
			enc[0] = (uint8_t)(0xf0 | c >> 18);
			enc[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3f));
			enc[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
			enc[3] = (uint8_t)(0x80 | (c & 0x3f));
			n = 4;
		}
		if (o + (size_t)n + 1 > out_max)
			return -1;
		memcpy(out + o, enc, (size_t)n);
		o += (size_t)n;
	}
	if (o + 1 > out_max)
		return -1;
	out[o] = 0;
	return (int)o;
}

int vhdx_utf8_to_utf16(const char *in, uint8_t *out, size_t out_max)
{
	const uint8_t *p = (const uint8_t *)in;
	size_t o = 0;

	while (*p) {
		uint32_t c;
		int extra;

		if (*p < 0x80) {
			c = *p;
			extra = 0;
		} else if ((*p & 0xe0) == 0xc0) {
			c = *p & 0x1f;
			extra = 1;
		} else if ((*p & 0xf0) == 0xe0) {
			c = *p & 0x0f;
			extra = 2;
		} else if ((*p & 0xf8) == 0xf0) {
			c = *p & 0x07;
			extra = 3;
		} else {
			return -1;
		}
		p++;
		for (int k = 0; k < extra; k++, p++) {
			if ((*p & 0xc0) != 0x80)
				return -1;
			c = c << 6 | (*p & 0x3f);
		}
		if (c >= 0x10000) {
			if (o + 4 > out_max)
				return -1;
			c -= 0x10000;
			vhdx_put16(out + o, (uint16_t)(0xd800 + (c >> 10)));
			vhdx_put16(out + o + 2,
				   (uint16_t)(0xdc00 + (c & 0x3ff)));
			o += 4;
		} else {
			if (o + 2 > out_max)
				return -1;
			vhdx_put16(out + o, (uint16_t)c);
			o += 2;
		}
	}
	return (int)o;
}

/* ---- BAT geometry ------------------------------------------------------*/

void vhdx_bat_geometry(uint64_t disk_size, uint32_t block_size,
		       uint32_t logical_sector, bool differencing,
		       struct vhdx_bat_geometry *g)
{
	g->chunk_ratio = (uint32_t)(((uint64_t)VHDX_SECTORS_PER_BITMAP *
				     logical_sector) /
				    block_size);
	g->data_blocks = (disk_size + block_size - 1) / block_size;
	g->bitmap_blocks =
		(g->data_blocks + g->chunk_ratio - 1) / g->chunk_ratio;
	if (differencing)
		g->entries = g->bitmap_blocks * (g->chunk_ratio + 1ull);
	else if (g->data_blocks)
		g->entries =
			g->data_blocks + (g->data_blocks - 1) / g->chunk_ratio;
	else
		g->entries = 0;
}
