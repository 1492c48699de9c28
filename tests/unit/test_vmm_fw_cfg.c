/* SPDX-License-Identifier: MIT */
/* fw_cfg: signature, ID, file directory, port and DMA reads, and hostile
 * DMA descriptors (outside RAM, wrapping, writes, huge lengths). */
#include <criterion/criterion.h>
#include <errno.h>

#include "vmm_test_util.h"

#define RAM (16u << 20)

static struct vmm *vm;
static struct fw_cfg *fc;

static void setup(void)
{
	vm = vmm_create_test(RAM);
	cr_assert_not_null(vm);
	fc = fw_cfg_create(vm);
	cr_assert_not_null(fc);
}

static void teardown(void)
{
	fw_cfg_destroy(fc);
	vmm_destroy(vm);
}

TestSuite(vmm_fw_cfg, .init = setup, .fini = teardown);

static void select_key(uint16_t key)
{
	pio_write(vm, 0x510, key, 2);
}

static void read_data(void *buf, size_t len)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = inb(vm, 0x511);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* Write a DMA descriptor at gpa and start it (low half at 0x518). */
static void dma(uint64_t desc_gpa, uint32_t control, uint32_t length,
		uint64_t address)
{
	uint8_t *desc = vmm_gpa_to_hva(vm, desc_gpa, 16);
	uint32_t hi, lo;

	if (desc) {
		put_be32(desc, control);
		put_be32(desc + 4, length);
		put_be32(desc + 8, address >> 32);
		put_be32(desc + 12, (uint32_t)address);
	}
	put_be32((uint8_t *)&hi, desc_gpa >> 32);
	put_be32((uint8_t *)&lo, (uint32_t)desc_gpa);
	pio_write(vm, 0x514, hi, 4);
	pio_write(vm, 0x518, lo, 4);
}

Test(vmm_fw_cfg, signature_and_id)
{
	char sig[5] = { 0 };
	uint32_t id;

	select_key(0);
	read_data(sig, 4);
	cr_assert_str_eq(sig, "QEMU");
	/* reading past the end gives zeros */
	cr_assert_eq(inb(vm, 0x511), 0);
	select_key(1);
	read_data(&id, 4);
	cr_assert_eq(id & 3, 3, "traditional and DMA interfaces");
	/* the DMA register reads back "QEMU CFG" big-endian */
	cr_assert_eq(inb(vm, 0x514), 'Q');
	cr_assert_eq(inb(vm, 0x51b), 'G');
}

Test(vmm_fw_cfg, file_directory_and_contents)
{
	uint8_t count[4], entry[64];
	char buf[8] = { 0 };

	cr_assert_eq(fw_cfg_add_file(fc, "etc/one", "first", 5), 0);
	cr_assert_eq(fw_cfg_add_file(fc, "etc/two", "second", 6), 0);
	/* same name again replaces the contents, keeps the key */
	cr_assert_eq(fw_cfg_add_file(fc, "etc/one", "FIRST!", 6), 0);
	select_key(0x19);
	read_data(count, 4);
	cr_assert_eq(be32(count), 2);
	read_data(entry, 64);
	cr_assert_eq(be32(entry), 6);
	cr_assert_str_eq((char *)entry + 8, "etc/one");
	select_key(entry[4] << 8 | entry[5]);
	read_data(buf, 6);
	cr_assert_str_eq(buf, "FIRST!");
	read_data(entry, 64); /* the directory position was reset: reselect */
	select_key(0x19);
	read_data(count, 4);
	read_data(entry, 64);
	read_data(entry, 64);
	cr_assert_str_eq((char *)entry + 8, "etc/two");
}

Test(vmm_fw_cfg, bad_names_and_keys)
{
	char name[80];

	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	cr_assert_eq(fw_cfg_add_file(fc, name, "x", 1), -EINVAL);
	cr_assert_eq(fw_cfg_add_file(fc, "", "x", 1), -EINVAL);
	cr_assert_eq(fw_cfg_add_item(fc, 0x19, "x", 1), -EINVAL);
	/* arch-local and unknown keys read as empty, not as key 0 */
	select_key(0x8000);
	cr_assert_eq(inb(vm, 0x511), 0);
	select_key(0x3fff);
	cr_assert_eq(inb(vm, 0x511), 0);
	/* wrong access sizes are ignored */
	pio_write(vm, 0x510, 0, 1);
	cr_assert_eq(pio_read(vm, 0x511, 2), 0);
}

Test(vmm_fw_cfg, dma_select_and_read)
{
	uint8_t *dst = vmm_gpa_to_hva(vm, 0x2000, 16);
	uint8_t *desc = vmm_gpa_to_hva(vm, 0x1000, 16);

	cr_assert_eq(fw_cfg_add_file(fc, "etc/e820", "0123456789", 10), 0);
	memset(dst, 0xaa, 16);
	/* select key 0x20 (the first file) and read 12 bytes: 10 + 2 zeros */
	dma(0x1000, 0x20 << 16 | 0x08 | 0x02, 12, 0x2000);
	cr_assert_eq(be32(desc), 0, "control cleared when done");
	cr_assert_eq(memcmp(dst, "0123456789\0\0", 12), 0);
	cr_assert_eq(dst[12], 0xaa, "nothing written past the length");
	/* skip, then read continues at the new offset */
	dma(0x1000, 0x20 << 16 | 0x08 | 0x04, 4, 0);
	dma(0x1000, 0x02, 3, 0x2000);
	cr_assert_eq(memcmp(dst, "456", 3), 0);
}

Test(vmm_fw_cfg, dma_hostile_descriptors)
{
	uint8_t *desc = vmm_gpa_to_hva(vm, 0x1000, 16);

	cr_assert_eq(fw_cfg_add_file(fc, "bootorder", "abc", 3), 0);
	/* descriptor outside RAM: ignored */
	dma(RAM + 0x1000, 0x02, 4, 0x2000);
	dma(0xfffffffffffffff8ull, 0x02, 4, 0x2000);
	/* destination outside RAM, wrapping, or longer than RAM: error */
	dma(0x1000, 0x20 << 16 | 0x08 | 0x02, 16, RAM - 8);
	cr_assert_eq(be32(desc), 1);
	dma(0x1000, 0x02, 0x100, 0xffffffffffffff00ull);
	cr_assert_eq(be32(desc), 1);
	dma(0x1000, 0x02, 0xffffffffu, 0);
	cr_assert_eq(be32(desc), 1);
	/* writes are refused */
	dma(0x1000, 0x20 << 16 | 0x08 | 0x10, 3, 0x2000);
	cr_assert_eq(be32(desc), 1);
	/* a skip far past the end, then a read: zeros, no overflow */
	dma(0x1000, 0x20 << 16 | 0x08 | 0x04, 0xfffffff0u, 0);
	cr_assert_eq(be32(desc), 0);
	dma(0x1000, 0x02, 4, 0x2000);
	cr_assert_eq(be32(desc), 0);
	cr_assert_eq(*(uint32_t *)vmm_gpa_to_hva(vm, 0x2000, 4), 0);
}

Test(vmm_fw_cfg, reset_deselects)
{
	uint8_t b;

	select_key(1);
	vm->reset_hooks[vm->reset_hook_count - 1].fn(
		vm->reset_hooks[vm->reset_hook_count - 1].opaque);
	read_data(&b, 1);
	cr_assert_eq(b, 'Q', "key 0 selected after reset");
}
