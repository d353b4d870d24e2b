from django.test import TestCase
from django.urls import reverse

from .models import Entry


class GuestbookTests(TestCase):
    def test_index_lists_entries(self):
        Entry.objects.create(name='Ada', message='Hello!')
        response = self.client.get(reverse('entries:index'))
        self.assertContains(response, 'Hello!')
        self.assertContains(response, 'csrfmiddlewaretoken')

    def test_post_saves_and_redirects(self):
        response = self.client.post(reverse('entries:index'), {'name': 'Bob', 'message': 'Hi'})
        self.assertRedirects(response, reverse('entries:index'))
        self.assertTrue(Entry.objects.filter(name='Bob').exists())

    def test_post_invalid_shows_errors(self):
        response = self.client.post(reverse('entries:index'), {'name': '', 'message': 'Hi'})
        self.assertEqual(response.status_code, 200)
        self.assertFalse(Entry.objects.exists())

    def test_healthz(self):
        response = self.client.get(reverse('entries:healthz'))
        self.assertEqual(response.json()['status'], 'ok')
