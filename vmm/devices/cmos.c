// SPDX-License-Identifier: MIT
/*
 * CMOS RAM and the MC146818 real-time clock at 0x70 (index; bit 7 masks
 * NMI) and 0x71 (data), IRQ 8.  The clock follows the host's clock plus
 * whatever offset the guest sets; the periodic and update-ended
 * interrupts come from a timerfd thread.  Memory-size bytes as PC BIOSes
 * (and SeaBIOS without fw_cfg) read them.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "vmm/machine.h"

#define CMOS_PORT 0x70
#define CMOS_SIZE 128
#define CMOS_IRQ 8

#define RTC_SECONDS 0x00
#define RTC_SECONDS_ALARM 0x01
#define RTC_MINUTES 0x02
#define RTC_MINUTES_ALARM 0x03
#define RTC_HOURS 0x04
#define RTC_HOURS_ALARM 0x05
#define RTC_DAY_OF_WEEK 0x06
#define RTC_DAY_OF_MONTH 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_REG_A 0x0a
#define RTC_REG_B 0x0b
#define RTC_REG_C 0x0c
#define RTC_REG_D 0x0d
#define CMOS_SHUTDOWN_STATUS 0x0f
#define RTC_CENTURY 0x32

#define REG_A_UIP 0x80
#define REG_B_SET 0x80
#define REG_B_PIE 0x40
#define REG_B_AIE 0x20
#define REG_B_UIE 0x10
#define REG_B_BINARY 0x04
#define REG_B_24H 0x02
#define REG_C_IRQF 0x80
#define REG_C_PF 0x40
#define REG_C_AF 0x20
#define REG_C_UF 0x10
#define REG_D_VRT 0x80

struct cmos {
	struct vmm *vm;
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t ram[CMOS_SIZE];
	/* guest time = host realtime + offset (seconds) */
	int64_t offset;
	int timer_fd;
	int stop_fd;
	pthread_t thread;
	bool thread_started;
	uint64_t ticks; /* periodic ticks since the last update-ended */
	unsigned ticks_per_second;
	bool irq_level;
};

static uint8_t to_bcd(unsigned v)
{
	return (v / 10) << 4 | (v % 10);
}

static unsigned from_bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 0xf);
}

static uint8_t cmos_encode(const struct cmos *c, unsigned v)
{
	return c->ram[RTC_REG_B] & REG_B_BINARY ? v : to_bcd(v);
}

static unsigned cmos_decode(const struct cmos *c, uint8_t v)
{
	return c->ram[RTC_REG_B] & REG_B_BINARY ? v : from_bcd(v);
}

static struct tm cmos_guest_time(const struct cmos *c)
{
	time_t now = time(NULL) + c->offset;
	struct tm tm;

	gmtime_r(&now, &tm);
	return tm;
}

static uint8_t cmos_hours(const struct cmos *c, unsigned hour)
{
	if (c->ram[RTC_REG_B] & REG_B_24H)
		return cmos_encode(c, hour);
	/* 12-hour mode: 1-12, bit 7 = PM */
	return cmos_encode(c, hour % 12 ? hour % 12 : 12) |
	       (hour >= 12 ? 0x80 : 0);
}

/* The guest finished setting the clock (SET cleared): take the new
 * offset from the time registers. */
static void cmos_take_guest_time(struct cmos *c)
{
	struct tm tm = { 0 };
	uint8_t hours = c->ram[RTC_HOURS];
	time_t guest;

	tm.tm_sec = cmos_decode(c, c->ram[RTC_SECONDS]);
	tm.tm_min = cmos_decode(c, c->ram[RTC_MINUTES]);
	if (c->ram[RTC_REG_B] & REG_B_24H) {
		tm.tm_hour = cmos_decode(c, hours);
	} else {
		tm.tm_hour = cmos_decode(c, hours & 0x7f) % 12;
		if (hours & 0x80)
			tm.tm_hour += 12;
	}
	tm.tm_mday = cmos_decode(c, c->ram[RTC_DAY_OF_MONTH]);
	tm.tm_mon = cmos_decode(c, c->ram[RTC_MONTH]) - 1;
	tm.tm_year = cmos_decode(c, c->ram[RTC_CENTURY]) * 100 +
		     cmos_decode(c, c->ram[RTC_YEAR]) - 1900;
	guest = timegm(&tm);
	if (guest != (time_t)-1)
		c->offset = (int64_t)guest - (int64_t)time(NULL);
}

static void cmos_update_irq(struct cmos *c)
{
	uint8_t flags = c->ram[RTC_REG_C] & (REG_C_PF | REG_C_AF | REG_C_UF);
	uint8_t enabled = c->ram[RTC_REG_B] &
			  (REG_B_PIE | REG_B_AIE | REG_B_UIE);
	bool level = flags & enabled;

	if (level)
		c->ram[RTC_REG_C] |= REG_C_IRQF;
	if (level != c->irq_level) {
		c->irq_level = level;
		vmm_set_irq(c->vm, CMOS_IRQ, level);
	}
}

/* Periodic rate from register A (MC146818 table 3): 0 = off. */
static unsigned cmos_periodic_hz(const struct cmos *c)
{
	unsigned rate = c->ram[RTC_REG_A] & 0xf;

	if (!rate)
		return 0;
	if (rate < 3)
		rate += 7;
	return 32768 >> (rate - 1);
}

static void cmos_arm_timer(struct cmos *c)
{
	struct itimerspec its = { 0 };
	unsigned hz = 0;

	if (c->ram[RTC_REG_B] & REG_B_PIE)
		hz = cmos_periodic_hz(c);
	if (!hz && c->ram[RTC_REG_B] & (REG_B_UIE | REG_B_AIE))
		hz = 1;
	c->ticks_per_second = hz;
	c->ticks = 0;
	if (hz) {
		its.it_interval.tv_nsec = 1000000000 / hz;
		its.it_value = its.it_interval;
	}
	if (c->timer_fd >= 0)
		timerfd_settime(c->timer_fd, 0, &its, NULL);
}

static void cmos_tick(struct cmos *c, uint64_t expirations)
{
	if (!c->ticks_per_second)
		return;
	if (c->ram[RTC_REG_B] & REG_B_PIE && cmos_periodic_hz(c))
		c->ram[RTC_REG_C] |= REG_C_PF;
	c->ticks += expirations;
	if (c->ticks >= c->ticks_per_second) {
		c->ticks %= c->ticks_per_second;
		if (!(c->ram[RTC_REG_B] & REG_B_SET)) {
			struct tm tm = cmos_guest_time(c);

			c->ram[RTC_REG_C] |= REG_C_UF;
			if (cmos_decode(c, c->ram[RTC_SECONDS_ALARM]) ==
				    (unsigned)tm.tm_sec &&
			    cmos_decode(c, c->ram[RTC_MINUTES_ALARM]) ==
				    (unsigned)tm.tm_min)
				c->ram[RTC_REG_C] |= REG_C_AF;
		}
	}
	cmos_update_irq(c);
}

static void *cmos_timer_thread(void *opaque)
{
	struct cmos *c = opaque;
	struct pollfd fds[2] = { { .fd = c->timer_fd, .events = POLLIN },
				 { .fd = c->stop_fd, .events = POLLIN } };

	for (;;) {
		uint64_t expirations;

		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[1].revents)
			break;
		if (read(c->timer_fd, &expirations, sizeof(expirations)) !=
		    sizeof(expirations))
			continue;
		pthread_mutex_lock(&c->lock);
		cmos_tick(c, expirations);
		pthread_mutex_unlock(&c->lock);
	}
	return NULL;
}

static uint8_t cmos_read(struct cmos *c, unsigned index)
{
	struct tm tm;
	uint8_t value;

	if (index > RTC_REG_D && index != RTC_CENTURY)
		return c->ram[index];
	if (c->ram[RTC_REG_B] & REG_B_SET && index <= RTC_YEAR)
		return c->ram[index];
	tm = cmos_guest_time(c);
	switch (index) {
	case RTC_SECONDS:
		return cmos_encode(c, tm.tm_sec);
	case RTC_MINUTES:
		return cmos_encode(c, tm.tm_min);
	case RTC_HOURS:
		return cmos_hours(c, tm.tm_hour);
	case RTC_DAY_OF_WEEK:
		return cmos_encode(c, tm.tm_wday + 1);
	case RTC_DAY_OF_MONTH:
		return cmos_encode(c, tm.tm_mday);
	case RTC_MONTH:
		return cmos_encode(c, tm.tm_mon + 1);
	case RTC_YEAR:
		return cmos_encode(c, tm.tm_year % 100);
	case RTC_CENTURY:
		return cmos_encode(c, (tm.tm_year + 1900) / 100);
	case RTC_REG_A: {
		/* update in progress during the last 244 us of a second */
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		value = c->ram[RTC_REG_A] & 0x7f;
		if (ts.tv_nsec >= 1000000000 - 244000 &&
		    !(c->ram[RTC_REG_B] & REG_B_SET))
			value |= REG_A_UIP;
		return value;
	}
	case RTC_REG_C:
		value = c->ram[RTC_REG_C];
		c->ram[RTC_REG_C] = 0;
		cmos_update_irq(c);
		return value;
	case RTC_REG_D:
		return REG_D_VRT;
	default: /* alarms, register B */
		return c->ram[index];
	}
}

static void cmos_write(struct cmos *c, unsigned index, uint8_t value)
{
	switch (index) {
	case RTC_REG_A:
		c->ram[RTC_REG_A] = value & 0x7f;
		cmos_arm_timer(c);
		break;
	case RTC_REG_B: {
		bool was_set = c->ram[RTC_REG_B] & REG_B_SET;

		if (value & REG_B_SET && !was_set) {
			/* freeze the current time where the guest edits it */
			struct tm tm = cmos_guest_time(c);

			c->ram[RTC_SECONDS] = cmos_encode(c, tm.tm_sec);
			c->ram[RTC_MINUTES] = cmos_encode(c, tm.tm_min);
			c->ram[RTC_HOURS] = cmos_hours(c, tm.tm_hour);
			c->ram[RTC_DAY_OF_WEEK] =
				cmos_encode(c, tm.tm_wday + 1);
			c->ram[RTC_DAY_OF_MONTH] = cmos_encode(c, tm.tm_mday);
			c->ram[RTC_MONTH] = cmos_encode(c, tm.tm_mon + 1);
			c->ram[RTC_YEAR] = cmos_encode(c, tm.tm_year % 100);
			c->ram[RTC_CENTURY] =
				cmos_encode(c, (tm.tm_year + 1900) / 100);
		}
		c->ram[RTC_REG_B] = value;
		if (was_set && !(value & REG_B_SET))
			cmos_take_guest_time(c);
		cmos_arm_timer(c);
		cmos_update_irq(c);
		break;
	}
	case RTC_REG_C:
	case RTC_REG_D:
		break; /* read-only */
	default:
		c->ram[index] = value;
		break;
	}
}

static void cmos_io(void *opaque, uint64_t addr, void *data, unsigned size,
		    bool is_write)
{
	struct cmos *c = opaque;
	uint8_t *bytes = data;

	if (size != 1) {
		if (!is_write)
			memset(data, 0xff, size);
		return;
	}
	pthread_mutex_lock(&c->lock);
	if (addr == 0) {
		if (is_write)
			c->index = bytes[0] & 0x7f;
		else
			bytes[0] = 0xff;
	} else if (is_write) {
		cmos_write(c, c->index, bytes[0]);
	} else {
		bytes[0] = cmos_read(c, c->index);
	}
	pthread_mutex_unlock(&c->lock);
}

uint8_t cmos_peek(struct cmos *c, unsigned index)
{
	uint8_t value;

	pthread_mutex_lock(&c->lock);
	value = cmos_read(c, index & 0x7f);
	pthread_mutex_unlock(&c->lock);
	return value;
}

static void cmos_reset(void *opaque)
{
	struct cmos *c = opaque;

	pthread_mutex_lock(&c->lock);
	/* RESET clears the interrupt enables and flags (MC146818 data
	 * sheet); the rest of the battery-backed RAM stays. */
	c->ram[RTC_REG_B] &= ~(REG_B_PIE | REG_B_AIE | REG_B_UIE | 0x08);
	c->ram[RTC_REG_C] = 0;
	c->ram[CMOS_SHUTDOWN_STATUS] = 0;
	c->irq_level = false;
	cmos_arm_timer(c);
	pthread_mutex_unlock(&c->lock);
}

static void cmos_fill_memory_size(struct cmos *c)
{
	struct vmm *vm = c->vm;
	uint64_t ext_kib, above_16m, above_4g;

	c->ram[0x15] = 0x80; /* 640 KiB base memory */
	c->ram[0x16] = 0x02;
	ext_kib = vm->low_ram > 0x100000 ? (vm->low_ram - 0x100000) >> 10 : 0;
	if (ext_kib > 0xfc00)
		ext_kib = 0xfc00;
	c->ram[0x17] = c->ram[0x30] = ext_kib;
	c->ram[0x18] = c->ram[0x31] = ext_kib >> 8;
	above_16m = vm->low_ram > (16 << 20) ? (vm->low_ram - (16 << 20)) >> 16
					     : 0;
	if (above_16m > 0xffff)
		above_16m = 0xffff;
	c->ram[0x34] = above_16m;
	c->ram[0x35] = above_16m >> 8;
	above_4g = vm->high_ram >> 16;
	c->ram[0x5b] = above_4g;
	c->ram[0x5c] = above_4g >> 8;
	c->ram[0x5d] = above_4g >> 16;
	c->ram[0x5f] = vm->ncpus - 1;
}

struct cmos *cmos_create(struct vmm *vm)
{
	struct cmos *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->vm = vm;
	c->timer_fd = -1;
	c->stop_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	c->ram[RTC_REG_A] = 0x26; /* 32.768 kHz base, 1024 Hz rate */
	c->ram[RTC_REG_B] = REG_B_24H;
	cmos_fill_memory_size(c);
	c->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	c->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (c->timer_fd < 0 || c->stop_fd < 0)
		goto fail;
	if (pthread_create(&c->thread, NULL, cmos_timer_thread, c))
		goto fail;
	c->thread_started = true;
	if (vmm_register_pio(vm, CMOS_PORT, 2, cmos_io, c))
		goto fail;
	vmm_on_reset(vm, cmos_reset, c);
	return c;
fail:
	cmos_destroy(c);
	return NULL;
}

void cmos_destroy(struct cmos *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		uint64_t one = 1;

		if (write(c->stop_fd, &one, sizeof(one)) == sizeof(one))
			pthread_join(c->thread, NULL);
	}
	if (c->timer_fd >= 0)
		close(c->timer_fd);
	if (c->stop_fd >= 0)
		close(c->stop_fd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
