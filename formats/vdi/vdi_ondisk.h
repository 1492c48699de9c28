/* SPDX-License-Identifier: MIT */
/*
 * VDI on-disk structures (VirtualBox "VDI 1.1": pre-header, header
 * VDIHEADER1PLUS, block map, data blocks) and their conversion to host
 * order.  Everything on disk is little-endian.  The rest of the driver
 * works on struct vdi_header only.
 */
#ifndef FORMATS_VDI_ONDISK_H
#define FORMATS_VDI_ONDISK_H

#include "driver.h"

#include <stddef.h>
#include <stdint.h>

#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_PRE_HEADER_SIZE 72u
/* VDIHEADER1 (qemu writes this size) and VDIHEADER1PLUS (VirtualBox). */
#define VDI_HEADER1_SIZE 0x180u
#define VDI_HEADER1PLUS_SIZE 0x190u
#define VDI_SECTOR_SIZE 512u
#define VDI_DEFAULT_BLOCK_SIZE (1u << 20)
#define VDI_MIN_BLOCK_SIZE 512u
#define VDI_MAX_BLOCK_SIZE (256u << 20)
/* VirtualBox aligns the block map and the data of new images to 1 MiB. */
#define VDI_DATA_ALIGN (1u << 20)
/* Keeps the block map under 4 GiB, as qemu does. */
#define VDI_MAX_BLOCKS 0x3fffffffu

/* Block map entry values that are not block numbers. */
#define VDI_BLOCK_FREE 0xffffffffu /* not allocated: parent or zeros */
#define VDI_BLOCK_ZERO 0xfffffffeu /* reads as zeros, hides the parent */
#define VDI_BLOCK_IS_ALLOCATED(e) ((e) < VDI_BLOCK_ZERO)

enum vdi_image_type {
	VDI_TYPE_NORMAL = 1, /* dynamic */
	VDI_TYPE_FIXED = 2,
	VDI_TYPE_UNDO = 3,
	VDI_TYPE_DIFF = 4,
};

#define VDI_TEXT_VIRTUALBOX "<<< Oracle VM VirtualBox Disk Image >>>\n"

/* The first 512 bytes of a VDI file, as VirtualBox lays them out. */
struct vdi_header_disk {
	char text[64];
	uint32_t signature;
	uint32_t version;
	/* VDIHEADER1PLUS; header_size counts from here */
	uint32_t header_size;
	uint32_t image_type;
	uint32_t image_flags;
	char description[256];
	uint32_t offset_bmap;
	uint32_t offset_data;
	uint32_t legacy_cylinders;
	uint32_t legacy_heads;
	uint32_t legacy_sectors;
	uint32_t sector_size;
	uint32_t unused1;
	uint64_t disk_size;
	uint32_t block_size;
	uint32_t block_extra;
	uint32_t blocks_in_image;
	uint32_t blocks_allocated;
	uint8_t uuid_create[16];
	uint8_t uuid_modify[16];
	uint8_t uuid_link[16];		/* parent's uuid_create */
	uint8_t uuid_parent_modify[16]; /* parent's uuid_modify */
	/* present when header_size >= VDI_HEADER1PLUS_SIZE */
	uint32_t lchs_cylinders;
	uint32_t lchs_heads;
	uint32_t lchs_sectors;
	uint32_t lchs_sector_size;
	uint8_t padding[40];
} __attribute__((packed));

_Static_assert(sizeof(struct vdi_header_disk) == 512, "VDI header size");
_Static_assert(offsetof(struct vdi_header_disk, header_size) == 72,
	       "VDI pre-header size");
_Static_assert(offsetof(struct vdi_header_disk, offset_bmap) == 0x154,
	       "VDI offset_bmap");
_Static_assert(offsetof(struct vdi_header_disk, disk_size) == 0x170,
	       "VDI disk_size");
_Static_assert(offsetof(struct vdi_header_disk, uuid_create) == 0x188,
	       "VDI uuid_create");
_Static_assert(offsetof(struct vdi_header_disk, lchs_cylinders) ==
		       VDI_PRE_HEADER_SIZE + VDI_HEADER1_SIZE,
	       "VDI LCHS geometry");

/* Host-order view of the header. */
struct vdi_header {
	char text[64];
	uint32_t signature;
	uint32_t version;
	uint32_t header_size;
	uint32_t image_type;
	uint32_t image_flags;
	char description[256];
	uint32_t offset_bmap;
	uint32_t offset_data;
	uint32_t legacy_cylinders, legacy_heads, legacy_sectors;
	uint32_t sector_size;
	uint64_t disk_size;
	uint32_t block_size;
	uint32_t block_extra;
	uint32_t blocks_in_image;
	uint32_t blocks_allocated;
	uint8_t uuid_create[16]; /* as on disk (GUID byte order) */
	uint8_t uuid_modify[16];
	uint8_t uuid_link[16];
	uint8_t uuid_parent_modify[16];
	uint32_t lchs_cylinders, lchs_heads, lchs_sectors, lchs_sector_size;
};

/* ---- pure helpers (vdi_meta.c), unit-tested on their own -------------- */

void vdi_header_decode(struct vdi_header *h, const struct vdi_header_disk *d);
void vdi_header_encode(struct vdi_header_disk *d, const struct vdi_header *h);
/* Validate a decoded header against the file size.  Returns 0 or -errno
 * with one line naming the bad field in msg. */
int vdi_header_validate(const struct vdi_header *h, uint64_t file_size,
			char *msg, size_t msglen);
/* Fill a new header (normal or fixed) for size bytes and block size bs;
 * offsets aligned as VirtualBox does.  -EINVAL/-EFBIG with msg on bad
 * arguments. */
int vdi_header_init(struct vdi_header *h, uint64_t size, uint32_t bs,
		    enum vdi_image_type type, char *msg, size_t msglen);
/* Bytes from one data block to the next in the file. */
static inline uint64_t vdi_block_stride(const struct vdi_header *h)
{
	return (uint64_t)h->block_size + h->block_extra;
}
/* Host offset of the data of the block stored in slot. */
static inline uint64_t vdi_slot_offset(const struct vdi_header *h,
				       uint32_t slot)
{
	return h->offset_data + (uint64_t)slot * vdi_block_stride(h) +
	       h->block_extra;
}
/* A fresh version 4 UUID in on-disk (GUID) byte order. */
void vdi_uuid_generate(uint8_t uuid[16]);
/* RFC 4122 text of an on-disk GUID. */
void vdi_uuid_to_text(const uint8_t uuid[16], char out[37]);
bool vdi_uuid_is_null(const uint8_t uuid[16]);
const char *vdi_type_name(uint32_t type);

#endif
