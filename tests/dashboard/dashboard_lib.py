"""What the dashboard's browser tests share: Chromium started headless
through chromedriver (exit 77 when Selenium, chromedriver or Chromium is
missing or cannot start) and a Page with the helpers that read and click
the dashboard as a user would."""
import os
import sys
import time

from compute_lib import check
from image_test import ImageCloud

try:
    from selenium import webdriver
    from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                            TimeoutException, WebDriverException)
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    print('SKIP: python3-selenium is not installed')
    sys.exit(77)

__all__ = ['By', 'Page', 'dashboard_cloud', 'start_browser', 'StaleElementReferenceException', 'NoSuchElementException']

CHROMEDRIVER = '/usr/bin/chromedriver'


def dashboard_cloud(directory):
    """nimbus-api serving 'directory' as the dashboard, and nimbus-image,
    both allowing the dashboard's origin (CORS); returns (cloud, origin)."""
    cloud = ImageCloud(extra_conf={'dashboard': {'dir': directory}})
    origin = f'http://127.0.0.1:{cloud.ports["identity"]}'
    # The allowed origin is the dashboard's own, known once the ports are.
    cloud.stop()
    with open(cloud.config) as f:
        text = f.read()
    with open(cloud.config, 'w') as f:
        f.write(text.replace('[dashboard]\n', f'[dashboard]\nallowed_origins = {origin}\n'))
    cloud.start()
    cloud.restart_image()
    return cloud, origin


def start_browser(profile):
    if not os.path.exists(CHROMEDRIVER):
        print(f'SKIP: {CHROMEDRIVER} is not installed (apt-get install chromium-driver)')
        sys.exit(77)
    opts = webdriver.ChromeOptions()
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
              '--disable-extensions', '--no-first-run', '--renderer-process-limit=2',
              f'--user-data-dir={profile}', '--window-size=1280,900'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    try:
        b = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    except WebDriverException as e:
        print(f'SKIP: Chromium cannot start here: {e.msg}')
        sys.exit(77)
    b.set_page_load_timeout(20)
    return b


class Page:
    """The dashboard at ORIGIN/dashboard/ in 'browser'."""

    def __init__(self, browser, origin):
        self.browser = browser
        self.origin = origin

    def wait(self, what, fn, timeout=20):
        t0 = time.time()
        try:
            v = WebDriverWait(self.browser, timeout, poll_frequency=0.2, ignored_exceptions=(
                StaleElementReferenceException, NoSuchElementException)).until(lambda d: fn())
            check(True, f'{what} ({time.time() - t0:.1f}s)')
            return v
        except TimeoutException:
            err = self.by_id('error')
            extra = '' if not err.is_displayed() else ' [error shown: ' + err.text + ']'
            check(False, f'{what} (timed out){extra}')
            return None

    def by_id(self, i):
        return self.browser.find_element(By.ID, i)

    def visible(self, i):
        els = self.browser.find_elements(By.ID, i)
        return bool(els) and els[0].is_displayed()

    def login(self, user, password, project):
        self.browser.get(self.origin + '/dashboard/')
        self.wait('the login form is shown', lambda: self.visible('login-form'))
        for i, v in (('login-user', user), ('login-password', password), ('login-project', project)):
            self.by_id(i).clear()
            self.by_id(i).send_keys(v)
        self.by_id('login-submit').click()

    def logout(self):
        self.by_id('logout').click()
        self.wait('logged out: the login form is back', lambda: self.visible('login-form'))

    def row_text(self, name, cls):
        return self.browser.execute_script(
            "const e = document.querySelector("
            "'#servers-table tbody tr[data-name=\"' + arguments[0] + '\"] .' + arguments[1]);"
            "return e ? e.textContent : null;", name, cls)

    def row_status(self, name):
        """The status shown for server 'name', with its task state in
        parentheses when it has one (one read: the list is redrawn while it
        refreshes), or None when it is not listed."""
        return self.row_text(name, 'server-status')

    def click_in_row(self, name, cls):
        """Clicks a button of the row (again if the list was redrawn under
        the click)."""
        for _ in range(5):
            try:
                self.browser.find_element(
                    By.CSS_SELECTOR, f'#servers-table tbody tr[data-name="{name}"] button.{cls}').click()
                return True
            except (StaleElementReferenceException, NoSuchElementException):
                time.sleep(0.2)
        check(False, f'clicking {cls} of {name}')
        return False
