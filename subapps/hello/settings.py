"""Settings the hello sub-app declares."""

from nestor import Setting

GREETING = Setting("greeting", str, "Hello", help="The word hello greets with, at any level")
