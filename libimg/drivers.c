/* SPDX-License-Identifier: MIT */
/* The format driver table, in probe order.  Adding a format: one line. */
#include "driver.h"

/* Weak while the drivers land one by one: a driver that is not linked in
 * leaves a NULL entry, which the core skips. */
extern const struct img_driver img_driver_vdi __attribute__((weak));
extern const struct img_driver img_driver_vhd __attribute__((weak));
extern const struct img_driver img_driver_vmdk __attribute__((weak));
extern const struct img_driver img_driver_raw __attribute__((weak));

const struct img_driver *const img_drivers[IMG_NDRIVERS] = {
	&img_driver_vdi, &img_driver_vhd, &img_driver_vmdk,
	&img_driver_raw, /* last: it matches anything */
};
