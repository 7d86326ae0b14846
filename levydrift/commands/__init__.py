"""The commands that sit above the services: check, report, schedule, daily, notify, demo,
simulate and topics. They use the services' public functions; nothing below imports them."""
