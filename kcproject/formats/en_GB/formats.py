"""Date formats of the console (LANGUAGE_CODE en-gb): one format for every time,
in TIME_ZONE, with the zone's label, so nobody guesses which clock a time is on."""

DATETIME_FORMAT = "D j M Y, H:i T"
SHORT_DATETIME_FORMAT = "D j M Y, H:i T"
DATE_FORMAT = "D j M Y"
SHORT_DATE_FORMAT = "D j M Y"
TIME_FORMAT = "H:i"
