from django.db import models


class Entry(models.Model):
    name = models.CharField(max_length=80)
    message = models.TextField(max_length=2000)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ['-created']
        verbose_name_plural = 'entries'

    def __str__(self):
        return f'{self.name}: {self.message[:40]}'
