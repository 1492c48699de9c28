/* SPDX-License-Identifier: MIT */
/*
 * VDI header codec, validation and layout of new images.  Pure functions
 * (no I/O) so that unit tests can drive them directly.
 */
#include "vdi_ondisk.h"

#include <stdio.h>
#include <string.h>

void vdi_header_decode(struct vdi_header *h, const struct vdi_header_disk *d)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->text, d->text, sizeof(h->text));
	h->signature = IMG_LE32(d->signature);
	h->version = IMG_LE32(d->version);
	h->header_size = IMG_LE32(d->header_size);
	h->image_type = IMG_LE32(d->image_type);
	h->image_flags = IMG_LE32(d->image_flags);
	memcpy(h->description, d->description, sizeof(h->description));
	h->description[sizeof(h->description) - 1] = '\0';
	h->offset_bmap = IMG_LE32(d->offset_bmap);
	h->offset_data = IMG_LE32(d->offset_data);
	h->legacy_cylinders = IMG_LE32(d->legacy_cylinders);
	h->legacy_heads = IMG_LE32(d->legacy_heads);
	h->legacy_sectors = IMG_LE32(d->legacy_sectors);
	h->sector_size = IMG_LE32(d->sector_size);
	h->disk_size = IMG_LE64(d->disk_size);
	h->block_size = IMG_LE32(d->block_size);
	h->block_extra = IMG_LE32(d->block_extra);
	h->blocks_in_image = IMG_LE32(d->blocks_in_image);
	h->blocks_allocated = IMG_LE32(d->blocks_allocated);
	memcpy(h->uuid_create, d->uuid_create, 16);
	memcpy(h->uuid_modify, d->uuid_modify, 16);
	memcpy(h->uuid_link, d->uuid_link, 16);
	memcpy(h->uuid_parent_modify, d->uuid_parent_modify, 16);
	/* Only VDIHEADER1PLUS has the LCHS geometry; a shorter header's
	 * bytes there belong to the block map or padding. */
	if (h->header_size >= VDI_HEADER1PLUS_SIZE) {
		h->lchs_cylinders = IMG_LE32(d->lchs_cylinders);
		h->lchs_heads = IMG_LE32(d->lchs_heads);
		h->lchs_sectors = IMG_LE32(d->lchs_sectors);
		h->lchs_sector_size = IMG_LE32(d->lchs_sector_size);
	}
}

void vdi_header_encode(struct vdi_header_disk *d, const struct vdi_header *h)
{
	memset(d, 0, sizeof(*d));
	memcpy(d->text, h->text, sizeof(d->text));
	d->signature = IMG_LE32(h->signature);
	d->version = IMG_LE32(h->version);
	d->header_size = IMG_LE32(h->header_size);
	d->image_type = IMG_LE32(h->image_type);
	d->image_flags = IMG_LE32(h->image_flags);
	memcpy(d->description, h->description, sizeof(d->description));
	d->offset_bmap = IMG_LE32(h->offset_bmap);
	d->offset_data = IMG_LE32(h->offset_data);
	d->legacy_cylinders = IMG_LE32(h->legacy_cylinders);
	d->legacy_heads = IMG_LE32(h->legacy_heads);
	d->legacy_sectors = IMG_LE32(h->legacy_sectors);
	d->sector_size = IMG_LE32(h->sector_size);
	d->disk_size = IMG_LE64(h->disk_size);
	d->block_size = IMG_LE32(h->block_size);
	d->block_extra = IMG_LE32(h->block_extra);
	d->blocks_in_image = IMG_LE32(h->blocks_in_image);
	d->blocks_allocated = IMG_LE32(h->blocks_allocated);
	memcpy(d->uuid_create, h->uuid_create, 16);
	memcpy(d->uuid_modify, h->uuid_modify, 16);
	memcpy(d->uuid_link, h->uuid_link, 16);
	memcpy(d->uuid_parent_modify, h->uuid_parent_modify, 16);
	if (h->header_size >= VDI_HEADER1PLUS_SIZE) {
		d->lchs_cylinders = IMG_LE32(h->lchs_cylinders);
		d->lchs_heads = IMG_LE32(h->lchs_heads);
		d->lchs_sectors = IMG_LE32(h->lchs_sectors);
		d->lchs_sector_size = IMG_LE32(h->lchs_sector_size);
	}
}

static int vdi_invalid(char *msg, size_t msglen, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int vdi_invalid(char *msg, size_t msglen, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
	return err;
}

static bool vdi_is_power_of_two(uint64_t v)
{
	return v && !(v & (v - 1));
}

int vdi_header_validate(const struct vdi_header *h, uint64_t file_size,
			char *msg, size_t msglen)
{
	uint64_t header_end, bmap_end;

	if (file_size < VDI_PRE_HEADER_SIZE + 4)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "truncated header: file is %llu bytes",
				   (unsigned long long)file_size);
	if (h->signature != VDI_SIGNATURE)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "bad signature 0x%08x (not a VDI image)",
				   h->signature);
	if (h->version != VDI_VERSION_1_1)
		return vdi_invalid(msg, msglen, -ENOTSUP,
				   "unsupported version %u.%u (only 1.1)",
				   h->version >> 16, h->version & 0xffff);
	if (h->header_size < VDI_HEADER1_SIZE ||
	    h->header_size >
		    sizeof(struct vdi_header_disk) - VDI_PRE_HEADER_SIZE)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "header size %u is invalid", h->header_size);
	header_end = VDI_PRE_HEADER_SIZE + h->header_size;
	if (file_size < header_end)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "truncated header: file is %llu bytes, "
				   "header needs %llu",
				   (unsigned long long)file_size,
				   (unsigned long long)header_end);
	switch (h->image_type) {
	case VDI_TYPE_NORMAL:
	case VDI_TYPE_FIXED:
	case VDI_TYPE_DIFF:
		break;
	case VDI_TYPE_UNDO:
		return vdi_invalid(msg, msglen, -ENOTSUP,
				   "image type 3 (undo) is not supported");
	default:
		return vdi_invalid(msg, msglen, -EINVAL,
				   "image type %u is invalid", h->image_type);
	}
	if (h->sector_size != VDI_SECTOR_SIZE)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "sector size %u is not 512", h->sector_size);
	if (!vdi_is_power_of_two(h->block_size) ||
	    h->block_size < VDI_MIN_BLOCK_SIZE ||
	    h->block_size > VDI_MAX_BLOCK_SIZE)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "block size %u is not a power of two "
				   "between 512 and 256 MiB",
				   h->block_size);
	if (h->block_extra % VDI_SECTOR_SIZE || h->block_extra > h->block_size)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "block extra size %u is invalid",
				   h->block_extra);
	if (h->disk_size % VDI_SECTOR_SIZE)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "disk size %llu is not a multiple of 512",
				   (unsigned long long)h->disk_size);
	if (h->blocks_in_image > VDI_MAX_BLOCKS)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "block count %u is too large",
				   h->blocks_in_image);
	if (h->disk_size > (uint64_t)h->blocks_in_image * h->block_size)
		return vdi_invalid(
			msg, msglen, -EINVAL,
			"disk size %llu exceeds %u blocks of %u bytes",
			(unsigned long long)h->disk_size, h->blocks_in_image,
			h->block_size);
	if (h->offset_bmap < header_end)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "block map offset %u overlaps the header",
				   h->offset_bmap);
	bmap_end = h->offset_bmap + (uint64_t)h->blocks_in_image * 4;
	if (h->offset_data < bmap_end)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "data offset %u overlaps the block map "
				   "(ends at %llu)",
				   h->offset_data,
				   (unsigned long long)bmap_end);
	if (bmap_end > file_size)
		return vdi_invalid(
			msg, msglen, -EINVAL,
			"block map (%u entries at offset %u) extends "
			"past the end of file (%llu bytes)",
			h->blocks_in_image, h->offset_bmap,
			(unsigned long long)file_size);
	if (h->image_type == VDI_TYPE_DIFF && vdi_uuid_is_null(h->uuid_link))
		return vdi_invalid(msg, msglen, -EINVAL,
				   "differencing image has no parent UUID");
	return 0;
}

static uint64_t vdi_align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

int vdi_header_init(struct vdi_header *h, uint64_t size, uint32_t bs,
		    enum vdi_image_type type, char *msg, size_t msglen)
{
	uint64_t blocks, data;

	if (!vdi_is_power_of_two(bs) || bs < VDI_MIN_BLOCK_SIZE ||
	    bs > VDI_MAX_BLOCK_SIZE)
		return vdi_invalid(msg, msglen, -EINVAL,
				   "block size %u is not a power of two "
				   "between 512 and 256 MiB",
				   bs);
	if (size > UINT64_MAX - bs)
		return vdi_invalid(msg, msglen, -EFBIG, "size is too large");
	size = vdi_align_up(size, VDI_SECTOR_SIZE);
	blocks = (size + bs - 1) / bs;
	if (blocks > VDI_MAX_BLOCKS)
		return vdi_invalid(msg, msglen, -EFBIG,
				   "size %llu needs %llu blocks of %u bytes; "
				   "VDI allows at most %u",
				   (unsigned long long)size,
				   (unsigned long long)blocks, bs,
				   VDI_MAX_BLOCKS);
	data = vdi_align_up(VDI_DATA_ALIGN + blocks * 4, VDI_DATA_ALIGN);
	if (data > UINT32_MAX)
		return vdi_invalid(msg, msglen, -EFBIG,
				   "block map too large for a VDI header");

	memset(h, 0, sizeof(*h));
	memcpy(h->text, VDI_TEXT_VIRTUALBOX, sizeof(VDI_TEXT_VIRTUALBOX) - 1);
	h->signature = VDI_SIGNATURE;
	h->version = VDI_VERSION_1_1;
	h->header_size = VDI_HEADER1PLUS_SIZE;
	h->image_type = type;
	h->offset_bmap = VDI_DATA_ALIGN;
	h->offset_data = (uint32_t)data;
	h->sector_size = VDI_SECTOR_SIZE;
	h->disk_size = size;
	h->block_size = bs;
	h->blocks_in_image = (uint32_t)blocks;
	h->blocks_allocated = type == VDI_TYPE_FIXED ? (uint32_t)blocks : 0;
	h->lchs_sector_size = VDI_SECTOR_SIZE;
	vdi_uuid_generate(h->uuid_create);
	vdi_uuid_generate(h->uuid_modify);
	return 0;
}

/* VirtualBox keeps UUIDs as little-endian GUIDs: the first three fields
 * are byte-swapped compared with the RFC 4122 (big-endian) form. */
static void vdi_uuid_swap(uint8_t out[16], const uint8_t in[16])
{
	static const uint8_t order[16] = { 3, 2, 1,  0,	 5,  4,	 7,  6,
					   8, 9, 10, 11, 12, 13, 14, 15 };

	for (int i = 0; i < 16; i++)
		out[i] = in[order[i]];
}

void vdi_uuid_generate(uint8_t uuid[16])
{
	uint8_t rfc[16];

	img_random_bytes(rfc, sizeof(rfc));
	rfc[6] = (rfc[6] & 0x0f) | 0x40;
	rfc[8] = (rfc[8] & 0x3f) | 0x80;
	vdi_uuid_swap(uuid, rfc);
}

void vdi_uuid_to_text(const uint8_t uuid[16], char out[37])
{
	uint8_t rfc[16];

	vdi_uuid_swap(rfc, uuid);
	img_uuid_format(rfc, out);
}

bool vdi_uuid_is_null(const uint8_t uuid[16])
{
	for (int i = 0; i < 16; i++)
		if (uuid[i])
			return false;
	return true;
}

const char *vdi_type_name(uint32_t type)
{
	switch (type) {
	case VDI_TYPE_NORMAL:
		return "dynamic";
	case VDI_TYPE_FIXED:
		return "fixed";
	case VDI_TYPE_UNDO:
		return "undo";
	case VDI_TYPE_DIFF:
		return "diff";
	}
	return "unknown";
}
