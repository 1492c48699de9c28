/* SPDX-License-Identifier: MIT */
/* CMOS/RTC: memory-size bytes, a clock that follows the host, BCD and
 * binary modes, setting the time, the periodic interrupt, hostile
 * accesses. */
#include <criterion/criterion.h>
#include <time.h>
#include <unistd.h>

#include "vmm_test_util.h"

static struct vmm *vm;
static struct cmos *cmos;

static void setup(void)
{
	vm = vmm_create_test(512u << 20);
	cr_assert_not_null(vm);
	cmos = cmos_create(vm);
	cr_assert_not_null(cmos);
}

static void teardown(void)
{
	cmos_destroy(cmos);
	vmm_destroy(vm);
}

TestSuite(vmm_cmos, .init = setup, .fini = teardown);

static uint8_t cmos_get(unsigned index)
{
	outb(vm, 0x70, index | 0x80); /* NMI-disable bit must not matter */
	return inb(vm, 0x71);
}

static void cmos_set(unsigned index, uint8_t value)
{
	outb(vm, 0x70, index);
	outb(vm, 0x71, value);
}

static unsigned bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 0xf);
}

Test(vmm_cmos, memory_size_bytes)
{
	/* 512 MiB: base 640 KiB, extended capped at 63 MiB, 496 MiB over
	 * 16 MiB in 64 KiB units, nothing over 4 GiB, one CPU */
	cr_assert_eq(cmos_get(0x15) | cmos_get(0x16) << 8, 640);
	cr_assert_eq(cmos_get(0x17) | cmos_get(0x18) << 8, 0xfc00);
	cr_assert_eq(cmos_get(0x30) | cmos_get(0x31) << 8, 0xfc00);
	cr_assert_eq(cmos_get(0x34) | cmos_get(0x35) << 8, (496u << 20) >> 16);
	cr_assert_eq(cmos_get(0x5b) | cmos_get(0x5c) | cmos_get(0x5d), 0);
	cr_assert_eq(cmos_get(0x5f), 0);
}

Test(vmm_cmos, clock_follows_host_in_bcd)
{
	time_t now = time(NULL);
	struct tm tm;
	unsigned year;

	gmtime_r(&now, &tm);
	year = bcd(cmos_get(0x32)) * 100 + bcd(cmos_get(0x09));
	cr_assert_eq(year, (unsigned)tm.tm_year + 1900);
	cr_assert_eq(bcd(cmos_get(0x08)), (unsigned)tm.tm_mon + 1);
	cr_assert_eq(bcd(cmos_get(0x07)), (unsigned)tm.tm_mday);
	cr_assert_eq(cmos_get(0x0d), 0x80, "valid RAM and time");
	cr_assert_eq(cmos_get(0x0b) & 0x02, 0x02, "24-hour mode");
}

Test(vmm_cmos, binary_mode_and_setting_the_time)
{
	/* binary mode */
	cmos_set(0x0b, 0x02 | 0x04);
	cr_assert_lt(cmos_get(0x00), 60);
	cr_assert_lt(cmos_get(0x04), 24);
	/* set 2030-06-15 12:34:56 with SET held, then release */
	cmos_set(0x0b, 0x80 | 0x02 | 0x04);
	cmos_set(0x00, 10);
	cmos_set(0x02, 34);
	cmos_set(0x04, 12);
	cmos_set(0x07, 15);
	cmos_set(0x08, 6);
	cmos_set(0x09, 30);
	cmos_set(0x32, 20);
	cmos_set(0x0b, 0x02 | 0x04);
	cr_assert_eq(cmos_get(0x09), 30);
	cr_assert_eq(cmos_get(0x08), 6);
	cr_assert_eq(cmos_get(0x07), 15);
	cr_assert_eq(cmos_get(0x04), 12);
	cr_assert_eq(cmos_get(0x02), 34);
	/* and it keeps ticking from there */
	cr_assert_geq(cmos_get(0x00), 10);
	cr_assert_lt(cmos_get(0x00), 40);
}

Test(vmm_cmos, periodic_interrupt)
{
	cr_assert_eq(cmos_get(0x0c), 0);
	cmos_set(0x0a, 0x26);	     /* 1024 Hz */
	cmos_set(0x0b, 0x02 | 0x40); /* PIE */
	/* 1 ms period; allow a loaded machine up to 2 s */
	for (int i = 0; i < 200 && !vm->gsi_level[8]; i++)
		usleep(10000);
	cr_assert(vm->gsi_level[8], "IRQ 8 raised");
	cr_assert_eq(cmos_get(0x0c) & 0xc0, 0xc0, "IRQF and PF");
	/* reading C acknowledged it; with PIE off it stays quiet */
	cmos_set(0x0b, 0x02);
	cr_assert_eq(cmos_get(0x0c) & 0x40, 0);
	cr_assert_not(vm->gsi_level[8]);
}

Test(vmm_cmos, hostile_accesses)
{
	/* word accesses, reads of the index port, writes to read-only C/D */
	pio_write(vm, 0x70, 0x0d, 2);
	cr_assert_eq(pio_read(vm, 0x71, 2), 0xffff);
	cr_assert_eq(inb(vm, 0x70), 0xff);
	cmos_set(0x0d, 0x00);
	cr_assert_eq(cmos_get(0x0d), 0x80);
	/* the whole RAM is addressable and keeps what is stored */
	for (unsigned i = 0x40; i < 0x80; i++)
		cmos_set(i, i ^ 0x5a);
	for (unsigned i = 0x40; i < 0x80; i++)
		if (i != 0x5b && i != 0x5c && i != 0x5d && i != 0x5f)
			cr_assert_eq(cmos_get(i), i ^ 0x5a);
	/* an impossible date from the guest does not break the clock */
	cmos_set(0x0b, 0x82);
	cmos_set(0x08, 0x99);
	cmos_set(0x07, 0x00);
	cmos_set(0x0b, 0x02);
	(void)cmos_get(0x00);
	cr_assert_eq(cmos_peek(cmos, 0x0d), 0x80);
}
