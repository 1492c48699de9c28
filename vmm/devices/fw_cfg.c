// SPDX-License-Identifier: MIT
/*
 * QEMU's firmware configuration interface, as SeaBIOS expects it
 * (QEMU docs/specs/fw_cfg.rst): selector at 0x510 (16-bit), data at 0x511
 * (8-bit), DMA address at 0x514 (two big-endian 32-bit halves; the write
 * of the low half at 0x518 starts the transfer).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/machine.h"

#define FW_CFG_PORT 0x510
#define FW_CFG_DMA_PORT 0x514
#define FW_CFG_SIGNATURE 0x00
#define FW_CFG_ID 0x01
#define FW_CFG_FILE_DIR 0x19
#define FW_CFG_FILE_FIRST 0x20
#define FW_CFG_MAX_ITEMS 0x100
#define FW_CFG_NAME_MAX 56
#define FW_CFG_ID_TRADITIONAL 0x1
#define FW_CFG_ID_DMA 0x2

/* DMA control bits */
#define FW_CFG_DMA_ERROR 0x01
#define FW_CFG_DMA_READ 0x02
#define FW_CFG_DMA_SKIP 0x04
#define FW_CFG_DMA_SELECT 0x08
#define FW_CFG_DMA_WRITE 0x10

/* "QEMU CFG", read back from the DMA port */
#define FW_CFG_DMA_SIGNATURE 0x51454d5520434647ull

struct fw_cfg_item {
	uint8_t *data;
	uint32_t len;
	char name[FW_CFG_NAME_MAX]; /* files only */
};

struct fw_cfg {
	struct vmm *vm;
	pthread_mutex_t lock;
	struct fw_cfg_item items[FW_CFG_MAX_ITEMS];
	unsigned next_file_key;
	uint16_t selector;
	uint32_t offset;
	uint64_t dma_address;
	uint8_t *directory; /* built on selection of FW_CFG_FILE_DIR */
	uint32_t directory_len;
};

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static int fw_cfg_set(struct fw_cfg_item *item, const void *data, size_t len)
{
	uint8_t *copy;

	if (len > UINT32_MAX)
		return -EFBIG;
	copy = malloc(len ? len : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, data, len);
	free(item->data);
	item->data = copy;
	item->len = len;
	return 0;
}

int fw_cfg_add_item(struct fw_cfg *fc, uint16_t key, const void *data,
		    size_t len)
{
	int ret;

	if (key >= FW_CFG_FILE_FIRST || key == FW_CFG_FILE_DIR)
		return -EINVAL;
	pthread_mutex_lock(&fc->lock);
	ret = fw_cfg_set(&fc->items[key], data, len);
	pthread_mutex_unlock(&fc->lock);
	return ret;
}

int fw_cfg_add_file(struct fw_cfg *fc, const char *name, const void *data,
		    size_t len)
{
	unsigned key;
	int ret;

	if (!name[0] || strlen(name) >= FW_CFG_NAME_MAX)
		return -EINVAL;
	pthread_mutex_lock(&fc->lock);
	for (key = FW_CFG_FILE_FIRST; key < fc->next_file_key; key++)
		if (!strcmp(fc->items[key].name, name))
			break;
	if (key == FW_CFG_MAX_ITEMS) {
		ret = -ENOSPC;
		goto out;
	}
	ret = fw_cfg_set(&fc->items[key], data, len);
	if (ret)
		goto out;
	strcpy(fc->items[key].name, name);
	if (key == fc->next_file_key)
		fc->next_file_key++;
out:
	pthread_mutex_unlock(&fc->lock);
	return ret;
}

/* The file directory: a big-endian count, then 64-byte entries. */
static void fw_cfg_build_directory(struct fw_cfg *fc)
{
	unsigned count = fc->next_file_key - FW_CFG_FILE_FIRST;
	uint32_t len = 4 + 64 * count;
	uint8_t *dir = calloc(1, len);

	free(fc->directory);
	fc->directory = dir;
	fc->directory_len = dir ? len : 0;
	if (!dir)
		return;
	put_be32(dir, count);
	for (unsigned i = 0; i < count; i++) {
		const struct fw_cfg_item *item =
			&fc->items[FW_CFG_FILE_FIRST + i];
		uint8_t *entry = dir + 4 + 64 * i;
		unsigned key = FW_CFG_FILE_FIRST + i;

		put_be32(entry, item->len);
		entry[4] = key >> 8;
		entry[5] = key;
		memcpy(entry + 8, item->name, FW_CFG_NAME_MAX);
	}
}

static void fw_cfg_current(struct fw_cfg *fc, const uint8_t **data,
			   uint32_t *len)
{
	/* bit 14 is the legacy write flag; arch-local keys (bit 15: ACPI,
	 * SMBIOS, e820 tables of old QEMUs) are all empty here */
	unsigned key = fc->selector & ~0x4000u;

	*data = NULL;
	*len = 0;
	if (key == FW_CFG_FILE_DIR) {
		*data = fc->directory;
		*len = fc->directory_len;
	} else if (key < FW_CFG_MAX_ITEMS) {
		*data = fc->items[key].data;
		*len = fc->items[key].len;
	}
}

static void fw_cfg_select(struct fw_cfg *fc, uint16_t selector)
{
	fc->selector = selector;
	fc->offset = 0;
	if ((selector & ~0x4000u) == FW_CFG_FILE_DIR)
		fw_cfg_build_directory(fc);
}

/* One DMA request: the 16-byte descriptor in guest RAM (control, length,
 * address, all big-endian); control is written back as 0 or error. */
static void fw_cfg_dma(struct fw_cfg *fc)
{
	uint8_t *desc = vmm_gpa_to_hva(fc->vm, fc->dma_address, 16);
	uint32_t control, length, status = 0;
	uint64_t address;

	if (!desc)
		return;
	control = get_be32(desc);
	length = get_be32(desc + 4);
	address = (uint64_t)get_be32(desc + 8) << 32 | get_be32(desc + 12);
	if (control & FW_CFG_DMA_SELECT)
		fw_cfg_select(fc, control >> 16);
	if (control & FW_CFG_DMA_WRITE) {
		/* nothing here is writable by the guest */
		status = FW_CFG_DMA_ERROR;
	} else if (control & FW_CFG_DMA_READ) {
		uint8_t *dest = vmm_gpa_to_hva(fc->vm, address, length);
		const uint8_t *data;
		uint32_t len, avail = 0;

		fw_cfg_current(fc, &data, &len);
		if (!dest) {
			status = FW_CFG_DMA_ERROR;
		} else {
			if (fc->offset < len)
				avail = len - fc->offset;
			if (avail > length)
				avail = length;
			if (avail)
				memcpy(dest, data + fc->offset, avail);
			/* past the end reads as zeros */
			memset(dest + avail, 0, length - avail);
			fc->offset += length;
		}
	} else if (control & FW_CFG_DMA_SKIP) {
		fc->offset += length;
	}
	put_be32(desc, status);
}

static void fw_cfg_io(void *opaque, uint64_t addr, void *data, unsigned size,
		      bool is_write)
{
	struct fw_cfg *fc = opaque;
	uint8_t *bytes = data;

	pthread_mutex_lock(&fc->lock);
	if (addr == 0 && size == 2 && is_write) {
		fw_cfg_select(fc, bytes[0] | bytes[1] << 8);
	} else if (addr == 1 && size == 1 && !is_write) {
		const uint8_t *item;
		uint32_t len;

		fw_cfg_current(fc, &item, &len);
		bytes[0] = fc->offset < len ? item[fc->offset] : 0;
		if (fc->offset < len)
			fc->offset++;
	} else if (addr >= 4 && addr < 12) {
		unsigned at = addr - 4;

		if (!is_write) {
			for (unsigned i = 0; i < size; i++)
				bytes[i] = (uint8_t)(FW_CFG_DMA_SIGNATURE >>
						     (8 * (7 - (at + i) % 8)));
		} else if (size == 4 && at == 0) {
			fc->dma_address = (uint64_t)get_be32(bytes) << 32;
		} else if (size == 4 && at == 4) {
			fc->dma_address |= get_be32(bytes);
			fw_cfg_dma(fc);
			fc->dma_address = 0;
		}
	} else if (!is_write) {
		memset(data, 0, size);
	}
	pthread_mutex_unlock(&fc->lock);
}

static void fw_cfg_io_dma_shim(void *opaque, uint64_t addr, void *data,
			       unsigned size, bool is_write)
{
	fw_cfg_io(opaque, addr + 4, data, size, is_write);
}

static void fw_cfg_reset(void *opaque)
{
	struct fw_cfg *fc = opaque;

	pthread_mutex_lock(&fc->lock);
	fc->selector = 0;
	fc->offset = 0;
	fc->dma_address = 0;
	pthread_mutex_unlock(&fc->lock);
}

struct fw_cfg *fw_cfg_create(struct vmm *vm)
{
	struct fw_cfg *fc = calloc(1, sizeof(*fc));
	uint32_t id = FW_CFG_ID_TRADITIONAL | FW_CFG_ID_DMA;

	if (!fc)
		return NULL;
	fc->vm = vm;
	fc->next_file_key = FW_CFG_FILE_FIRST;
	pthread_mutex_init(&fc->lock, NULL);
	if (fw_cfg_add_item(fc, FW_CFG_SIGNATURE, "QEMU", 4) ||
	    fw_cfg_add_item(fc, FW_CFG_ID, &id, 4) ||
	    vmm_register_pio(vm, FW_CFG_PORT, 2, fw_cfg_io, fc) ||
	    vmm_register_pio(vm, FW_CFG_DMA_PORT, 8, fw_cfg_io_dma_shim, fc))
		goto fail;
	vmm_on_reset(vm, fw_cfg_reset, fc);
	vm->fw_cfg = fc;
	return fc;
fail:
	fw_cfg_destroy(fc);
	return NULL;
}

void fw_cfg_destroy(struct fw_cfg *fc)
{
	if (!fc)
		return;
	for (unsigned i = 0; i < FW_CFG_MAX_ITEMS; i++)
		free(fc->items[i].data);
	free(fc->directory);
	pthread_mutex_destroy(&fc->lock);
	free(fc);
}
